"""The ``texplain mitigate`` command: select, mask, fine-tune, and compare with the baselines (Table 2).

It reads a run folder made by ``texplain demo`` (``--demo``) or the pieces
one by one (classifier folder, translator, LM, labelled data), runs
:func:`~texplain.mitigation.harness.run_mitigation` and writes
``mitigation.json``, ``table.md``, ``mitigation.png`` and ``report.html``
under ``--out``; ``--json FILE`` writes the table's numbers as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from texplain.cli import options
from texplain.errors import TexplainError

MITIGATE_SAMPLES = 20
"""Sentences per training image: selection explains every training image, so fewer than for one image."""


def _resolve(demo: Optional[Path], given: Optional[object], inside: str, what: str) -> Path:
    """An explicit option, else the demo folder's part, else an error naming the option."""
    if given is not None:
        return Path(str(given))
    if demo is not None:
        return demo / inside
    raise TexplainError(f"mitigate: give --{what} or --demo RUN_FOLDER")


def mitigate_command(
    out: Annotated[Path, typer.Option(help="Folder for checkpoints, mitigation.json, table.md, the plot and report.html")],
    demo: Annotated[Optional[Path], typer.Option(help="A `texplain demo` run folder: its classifier, translator, LM and labelled split")] = None,
    classifier: Annotated[Optional[Path], typer.Option("--classifier", "-c", help="Saved classifier folder (only read)")] = None,
    trust_code: options.TrustCode = False,
    translator: Annotated[Optional[Path], typer.Option(help="Translator checkpoint folder")] = None,
    lm: options.LMOverride = None,
    data: Annotated[Optional[Path], typer.Option(help="Labelled images: JSONL/CSV with path, label, split, group; BAR metadata; class folders")] = None,
    train_split: Annotated[str, typer.Option(help="Split to select and fine-tune on")] = "train",
    test_split: Annotated[str, typer.Option(help="Split to measure on")] = "test",
    methods: Annotated[str, typer.Option(help="Comma-separated: erm,randmask,randmask_all,masktune,jtt,dfr,texplain")] = "erm,randmask,randmask_all,masktune,jtt,dfr,texplain",
    seeds: Annotated[int, typer.Option(help="Number of seeds (seed, seed+1, ...)")] = 3,
    seed: Annotated[int, typer.Option(
        min=0, max=options.MAX_SEED, help="First seed (sampling and the first fine-tuning run)")] = options.SEED,
    samples: options.Samples = MITIGATE_SAMPLES,
    samples_mode: options.SamplesMode = None,
    stop_k: options.StopK = options.STOP_K,
    top_p: options.TopP = options.TOP_P,
    min_words: options.MinWords = options.MIN_WORDS,
    max_words: options.MaxWords = options.MAX_WORDS,
    min_frequency: Annotated[float, typer.Option(help="A dominant word is in at least this fraction of sentences")] = 0.1,
    min_lift: Annotated[float, typer.Option(help="A dominant word's lift over the LM prior is at least this")] = 1.5,
    wordnet: options.WordNet = True,
    class_words: options.ClassWords = None,
    localise: Annotated[str, typer.Option(help="word (where the non-class word is, TExplain's) or class (where the class logit is, MaskTune-style)")] = "word",
    heat: Annotated[str, typer.Option(help="keep (each window of grid cells scored alone), gradcam, or occlusion (grid cells hidden in turn)")] = "keep",
    cam_layer: Annotated[str, typer.Option(help="Where Grad-CAM's map is taken: auto (the deepest map of 8 x 8 or more), features, or a module name")] = "auto",
    grid: Annotated[int, typer.Option(help="keep and occlusion: grid cells per side")] = 8,
    window: Annotated[int, typer.Option(help="keep: cells a side of the window kept alone")] = 2,
    threshold: Annotated[float, typer.Option(help="Mask where the heat map reaches this (0-1]")] = 0.5,
    fill: Annotated[str, typer.Option(help="shuffle (the region of a random training image: no class cue), mean, blur, noise or zero")] = "shuffle",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs (TExplain, RandMask)")] = 3,
    masktune_epochs: Annotated[int, typer.Option(help="MaskTune's fine-tuning epochs")] = 1,
    jtt_upweight: Annotated[int, typer.Option(help="JTT: how many times a misclassified training sample counts")] = 6,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate (AdamW, warm-up then cosine decay)")] = 1e-4,
    batch_size: Annotated[int, typer.Option()] = 32,
    head_only: Annotated[bool, typer.Option(help="Fine-tune the last linear layer alone (the features stay as they were)")] = False,
    min_per_class: Annotated[int, typer.Option(help="Samples of every class a fine-tuning set needs")] = 1,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N training images (quick runs)")] = None,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the table's numbers to this JSON file")] = None,
    device: options.Device = options.DEVICE,
) -> None:
    """Mitigate a shortcut: fine-tune on the training samples explained by a non-class word, masked there."""
    from texplain.atomic import check_output_file, check_writable, write_json
    from texplain.data.labelled import read_labelled
    from texplain.mitigation.harness import MitigateConfig, run_mitigation
    from texplain.mitigation.masks import MaskConfig
    from texplain.mitigation.selection import SelectionConfig
    from texplain.models.explainer import load_explainer
    from texplain.report.mitigation_report import (
        markdown_table,
        write_mitigation_report,
    )
    from texplain.training.classifier_training import ClassifierTrainConfig

    check_writable(out)
    if json_file is not None:
        check_output_file(json_file)
    classifier_folder = _resolve(demo, classifier, "classifier", "classifier")
    data_file = _resolve(demo, data, "world/split/labels.jsonl", "data")
    if seeds < 1:
        raise TexplainError("mitigate: --seeds must be at least 1")
    config = MitigateConfig(
        selection=SelectionConfig(sampling=options.sampling_config(samples_mode, samples, top_p, min_words, max_words, seed,
                                                                   stop_k, default=MITIGATE_SAMPLES),
                                  min_frequency=min_frequency, min_lift=min_lift,
                                  class_words=options.class_word_config(class_words, wordnet)),
        mask=MaskConfig(localise=localise, threshold=threshold, fill=fill, heat=heat, layer=cam_layer, grid=grid,
                       window=window),
        finetune=ClassifierTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, device=device, head_only=head_only),
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        seeds=tuple(range(seed, seed + seeds)), masktune_epochs=masktune_epochs, jtt_upweight=jtt_upweight,
        min_per_class=min_per_class, device=device, trust_code=trust_code,
    )
    train_items = read_labelled(data_file, split=train_split)[:limit]
    test_items = read_labelled(data_file, split=test_split)
    needs_words = {"texplain", "randmask"} & set(config.methods)
    explainer = None
    if needs_words:
        lm_spec = lm or (str(demo / "lm") if demo is not None else None)
        explainer = load_explainer(_resolve(demo, translator, "translator", "translator"), str(classifier_folder), lm_spec,
                                   trust_code=trust_code)
    result, examples = run_mitigation(classifier_folder, explainer and explainer.translator, explainer and explainer.lm,
                                      train_items, test_items, out, config, progress=True)
    write_json(out / "mitigation.json", result)
    paths = write_mitigation_report(out, result, examples)
    if json_file is not None:
        write_json(json_file, {"summary": result["summary"], "selection": result.get("selection"),
                               "settings": result["settings"]})
    typer.echo(markdown_table(result), nl=False)
    typer.echo(f"report: {paths['report']}")
