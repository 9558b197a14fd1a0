"""The ``texplain mitigate`` command: select, mask, fine-tune, and compare with the baselines (Table 2).

It reads a run folder made by ``texplain demo`` (``--demo``) or the pieces
one by one (classifier folder, translator, LM, labelled data DATA), runs
:func:`~texplain.mitigation.runner.run_mitigation` and writes
``mitigation.json``, ``table.md``, ``mitigation.png`` and ``report.html``
under ``--out``; ``--json FILE`` writes the table's numbers as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from texplain.cli import options
from texplain.errors import TexplainError
from texplain.mitigation.config import MitigateConfig

MITIGATE = options.defaults(MitigateConfig)


def _resolve(demo: Optional[Path], given: Optional[object], inside: str, what: str) -> Path:
    """An explicit option, else the demo folder's part, else an error naming the option."""
    if given is not None:
        return Path(str(given))
    if demo is not None:
        return demo / inside
    raise TexplainError(f"mitigate: give {what} or --demo RUN_FOLDER")


def mitigate_command(
    out: Annotated[Path, typer.Option(help="Folder for checkpoints, mitigation.json, table.md, the plot and report.html")],
    data: Annotated[Optional[Path], typer.Argument(
        metavar="DATA", help=f"{options.LABELLED_HELP}; default: the --demo folder's")] = None,
    demo: Annotated[Optional[Path], typer.Option(
        help="A `texplain demo` run folder: its classifier, translator, LM and labelled split (DATA)")] = None,
    classifier: Annotated[Optional[str], typer.Option(
        "--classifier", "-c", help="As train's --classifier (timm:NAME, hf:ID, a saved folder, ...): only read, "
                                   "fine-tuned as copies; default: the --demo folder's")] = None,
    trust_code: options.TrustCode = MITIGATE.trust_code,
    translator: Annotated[Optional[Path], typer.Option(help="Translator checkpoint folder")] = None,
    lm: options.LMOverride = None,
    train_split: Annotated[str, typer.Option(help="Split to select and fine-tune on")] = "train",
    test_split: Annotated[str, typer.Option(help="Split to measure on")] = "test",
    methods: Annotated[str, typer.Option(
        help="Comma-separated: erm,randmask,randmask_all,masktune,jtt,dfr,texplain")] = ",".join(MITIGATE.methods),
    seeds: Annotated[int, typer.Option(help="Number of seeds (seed, seed+1, ...)")] = len(MITIGATE.seeds),
    seed: Annotated[int, typer.Option(
        min=0, max=options.MAX_SEED, help="First seed (sampling and the first fine-tuning run)")] = MITIGATE.seeds[0],
    samples: options.Samples = options.samples_default(MITIGATE.selection.sampling),
    stop_k: options.StopK = MITIGATE.selection.sampling.stop.k,
    top_p: options.TopP = MITIGATE.selection.sampling.top_p,
    min_words: options.MinWords = MITIGATE.selection.sampling.min_words,
    max_words: options.MaxWords = MITIGATE.selection.sampling.max_words,
    sample_batch: options.SampleBatch = str(MITIGATE.selection.sampling.batch_size),
    min_frequency: options.MinFrequency = MITIGATE.selection.min_frequency,
    min_lift: options.MinLift = MITIGATE.selection.min_lift,
    select: Annotated[str, typer.Option(
        help="Which samples to mask: suspects (one of the class's shortcut suspects is among the image's top words), "
             "not-class (the paper's: the image's first word is not its class), or auto (suspects when the classes "
             "are rarely said)")] = MITIGATE.selection.rule,
    select_top: Annotated[int, typer.Option(
        help="With suspects: pick a sample when a suspect is among its first this many words")] = MITIGATE.selection.top,
    select_threshold: Annotated[Optional[float], typer.Option(
        help="With suspects: pick a sample whose sentences say a suspect at least this often (0-1], instead of "
             "among its top words")] = MITIGATE.selection.threshold,
    wordnet: options.WordNet = MITIGATE.selection.class_words.wordnet,
    class_words: options.ClassWords = None,
    mask_localise: Annotated[str, typer.Option(
        rich_help_panel=options.MASKS,
        help="word (where the non-class word is, TExplain's) or class (where the class logit is, MaskTune-style)")
    ] = MITIGATE.mask.localise,
    mask_heat: options.MaskHeat = MITIGATE.mask.heat,
    mask_layer: options.MaskLayer = MITIGATE.mask.layer,
    mask_grid: options.MaskGrid = MITIGATE.mask.grid,
    mask_window: options.MaskWindow = MITIGATE.mask.window,
    mask_threshold: options.MaskThreshold = MITIGATE.mask.threshold,
    mask_fill: Annotated[str, typer.Option(
        rich_help_panel=options.MASKS,
        help="shuffle (the region of a random training image: no class cue), mean, blur, noise or zero")
    ] = MITIGATE.mask.fill,
    finetune: Annotated[str, typer.Option(
        help="What fine-tuning trains: last-stages (the backbone's last stage and the head), head (the last linear "
             "layer alone) or all")] = MITIGATE.finetune.trainable,
    head_only: Annotated[bool, typer.Option(hidden=True, help="Old name of --finetune head")] = False,
    epochs: Annotated[int, typer.Option(
        help="Most fine-tuning epochs (every method but MaskTune); training stops earlier on the held-out part")
    ] = MITIGATE.finetune.epochs,
    patience: Annotated[int, typer.Option(
        help="Stop fine-tuning after this many epochs without a lower held-out loss")] = MITIGATE.finetune.patience,
    holdout: Annotated[float, typer.Option(
        help="Share of the training split held out for early stopping and DFR, per group or class [0, 1)")
    ] = MITIGATE.holdout,
    keep_originals: Annotated[bool, typer.Option(
        help="TExplain and RandMask: fine-tune on the original images with the masked ones added as copies, "
             "not in their place")] = MITIGATE.keep_originals,
    spread_masks: Annotated[bool, typer.Option(
        help="TExplain: also mask images of the less-masked classes, each with a picked image's map, until every class "
             "has the same share masked, so that a filled region is no class's cue")] = MITIGATE.spread_masks,
    spare_class: Annotated[bool, typer.Option(
        help="TExplain: never mask the region of the image's most-said class word (found like the shortcut word's), "
             "so the object in front of its shortcut stays seen")] = MITIGATE.spare_class,
    masktune_epochs: Annotated[int, typer.Option(help="MaskTune's fine-tuning epochs")] = MITIGATE.masktune_epochs,
    jtt_epochs: Annotated[int, typer.Option(
        help="JTT: epochs of the identification model (briefly, so that it errs)")] = MITIGATE.jtt_epochs,
    jtt_upweight: Annotated[int, typer.Option(
        help="JTT: how many times a misclassified training sample counts")] = MITIGATE.jtt_upweight,
    lr: Annotated[float, typer.Option(
        help="Fine-tuning learning rate of the head (AdamW, warm-up then cosine decay)")] = MITIGATE.finetune.lr,
    backbone_lr: Annotated[float, typer.Option(
        help="The trained backbone layers' learning rate, as a fraction of --lr (0-1]")] = MITIGATE.finetune.backbone_lr,
    batch_size: Annotated[int, typer.Option(help="Fine-tuning batch size")] = MITIGATE.finetune.batch_size,
    min_per_class: Annotated[int, typer.Option(
        help="Samples of every class a fine-tuning set needs")] = MITIGATE.min_per_class,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N training images (quick runs)")] = None,
    json_file: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the table's numbers to this JSON file")] = None,
    device: options.Device = MITIGATE.device,
) -> None:
    """Mitigate a shortcut: fine-tune on the training samples explained by a non-class word, masked there."""
    from dataclasses import replace

    from texplain.atomic import check_output_file, check_writable, write_json
    from texplain.data.labelled import read_labelled
    from texplain.mitigation.runner import run_mitigation
    from texplain.models.explainer import load_explainer
    from texplain.report.mitigation_report import (
        markdown_table,
        write_mitigation_report,
    )

    check_writable(out)
    if json_file is not None:
        check_output_file(json_file)
    classifier_spec = classifier or str(_resolve(demo, None, "classifier", "--classifier"))
    data_file = _resolve(demo, data, "world/split/labels.jsonl", "DATA")
    if seeds < 1:
        raise TexplainError("mitigate: --seeds must be at least 1")
    if head_only and finetune not in ("head", MITIGATE.finetune.trainable):
        raise TexplainError(f"mitigate: --head-only (the old name of --finetune head) and --finetune {finetune} disagree")
    trainable = "head" if head_only else finetune
    sampling = options.sampling_config(MITIGATE.selection.sampling, samples, stop_k, sample_batch, top_p=top_p,
                                       min_words=min_words, max_words=max_words, seed=seed)
    config = MitigateConfig(
        selection=replace(MITIGATE.selection, sampling=sampling, min_frequency=min_frequency, min_lift=min_lift,
                          class_words=options.class_word_config(class_words, wordnet), rule=select,
                          top=select_top, threshold=select_threshold),
        mask=replace(MITIGATE.mask, localise=mask_localise, heat=mask_heat, layer=mask_layer, grid=mask_grid,
                     window=mask_window, threshold=mask_threshold, fill=mask_fill),
        finetune=replace(MITIGATE.finetune, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                         trainable=trainable, backbone_lr=backbone_lr, patience=patience),
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        seeds=tuple(range(seed, seed + seeds)), holdout=holdout, keep_originals=keep_originals,
        spread_masks=spread_masks, spare_class=spare_class,
        masktune_epochs=masktune_epochs, jtt_epochs=jtt_epochs, jtt_upweight=jtt_upweight, min_per_class=min_per_class,
        device=device, trust_code=trust_code,
    )
    train_items = read_labelled(data_file, split=train_split)[:limit]
    test_items = read_labelled(data_file, split=test_split)
    needs_words = {"texplain", "randmask"} & set(config.methods)
    explainer = None
    if needs_words:
        lm_spec = lm or (str(demo / "lm") if demo is not None else None)
        explainer = load_explainer(_resolve(demo, translator, "translator", "--translator"), classifier_spec, lm_spec,
                                   trust_code=trust_code)
    result, examples = run_mitigation(classifier_spec, explainer and explainer.translator, explainer and explainer.lm,
                                      train_items, test_items, out, config, progress=True)
    write_json(out / "mitigation.json", result)
    paths = write_mitigation_report(out, result, examples)
    if json_file is not None:
        write_json(json_file, {"summary": result["summary"], "selection": result.get("selection"),
                               "settings": result["settings"]})
    if result.get("selection"):
        typer.echo(f"selection rule: {result['selection']['rule']} ({result['selection']['reason']})")
    typer.echo(markdown_table(result), nl=False)
    typer.echo(f"report: {paths['report']}")
