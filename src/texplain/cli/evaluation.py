"""Command-line functions for evaluation and the rating study, registered in :mod:`texplain.cli`.

``evaluate`` measures explanations against reference captions beside the
null-prefix and shuffled baselines, with sanity and causal checks;
``rating-export`` writes a CSV and a self-contained HTML form for human
raters; ``rating-score`` scores the filled-in answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from texplain.cli import options
from texplain.evaluation.config import RATING_WORDS, EvaluateConfig

EVALUATE = options.defaults(EvaluateConfig)


def evaluate_command(
    translator: options.Translator,
    captions: Annotated[Path, typer.Option(help="Reference captions (Flickr8k captions.tsv, COCO json, JSONL, CSV…)")],
    split: Annotated[Optional[str], typer.Option(help="Keep only this split of the captions (e.g. dev)")] = None,
    images_dir: Annotated[Optional[Path], typer.Option(help="Folder the caption file's image names are relative to")] = None,
    images: Annotated[Optional[Path], typer.Option(
        help="Evaluate only these images (a folder or one file); default: every captioned image")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N images")] = None,
    classifier: options.ClassifierOverride = None,
    trust_code: options.TrustCode = False,
    lm: options.LMOverride = None,
    samples: options.Samples = options.samples_default(EVALUATE.sampling),
    stop_k: options.StopK = EVALUATE.sampling.stop.k,
    top_p: options.TopP = EVALUATE.sampling.top_p,
    min_words: options.MinWords = EVALUATE.sampling.min_words,
    max_words: options.MaxWords = EVALUATE.sampling.max_words,
    sample_batch: options.SampleBatch = str(EVALUATE.sampling.batch_size),
    top_words: options.TopWords = EVALUATE.words.top_k,
    precision_k: Annotated[int, typer.Option(help="k of precision@k")] = EVALUATE.precision_k,
    null_prefix: Annotated[str, typer.Option(
        help="Caption-only baseline: mean (translator on the mean feature), zero, or empty (LM alone)")
    ] = EVALUATE.null_prefix,
    minilm: Annotated[bool, typer.Option(help="Score all-MiniLM-L6-v2 cosine (offline package)")] = EVALUATE.minilm,
    bert: Annotated[Optional[Path], typer.Option(
        help="A BERT folder for the paper's mean-pooled cosine (skipped when absent)")] = EVALUATE.bert,
    sanity_images: Annotated[int, typer.Option(help="Images for the sanity checks (0: off)")] = EVALUATE.sanity_images,
    cascade: Annotated[bool, typer.Option(help="Run the weight-randomisation cascade")] = EVALUATE.cascade,
    causal_images: Annotated[int, typer.Option(
        help="Images for the causal masking check (0: off)")] = EVALUATE.causal_images,
    mask_heat: options.MaskHeat = EVALUATE.mask.heat,
    mask_layer: options.MaskLayer = EVALUATE.mask.layer,
    mask_grid: options.MaskGrid = EVALUATE.mask.grid,
    mask_window: options.MaskWindow = EVALUATE.mask.window,
    mask_threshold: options.MaskThreshold = EVALUATE.mask.threshold,
    mask_fill: Annotated[str, typer.Option(
        rich_help_panel=options.MASKS,
        help="zero (the preprocessing's mean: no colour of the image), or mean, blur or noise of the image")
    ] = EVALUATE.mask.fill,
    json_file: options.JsonFile = None,
    seed: options.Seed = EVALUATE.seed,
    device: options.Device = options.DEVICE,
) -> None:
    """Compare explanations with reference captions beside caption-only and shuffled baselines; sanity and causal checks."""
    from dataclasses import replace

    from texplain.atomic import check_output_file, write_json
    from texplain.evaluation.harness import evaluate
    from texplain.evaluation.references import select_references
    from texplain.models.explainer import load_explainer

    if json_file is not None:
        check_output_file(json_file)
    config = EvaluateConfig(
        sampling=options.sampling_config(EVALUATE.sampling, samples, stop_k, sample_batch, top_p=top_p,
                                         min_words=min_words, max_words=max_words, seed=seed),
        words=replace(EVALUATE.words, top_k=top_words), precision_k=precision_k, null_prefix=null_prefix, minilm=minilm,
        bert=bert, sanity_images=sanity_images, cascade=cascade, causal_images=causal_images,
        mask=replace(EVALUATE.mask, heat=mask_heat, layer=mask_layer, grid=mask_grid, window=mask_window,
                     threshold=mask_threshold, fill=mask_fill), seed=seed,
    )
    references, missing = select_references(captions, images_dir, split, images, limit)
    explainer = load_explainer(translator, classifier, lm, device, trust_code)
    report = evaluate(explainer, references, config)
    report["images"]["missing_references"] = missing
    report["images"]["requested"] = len(references) + len(missing)
    report["inputs"] = {"translator": str(translator), "classifier": explainer.classifier.spec,
                        "lm": explainer.lm.spec, "captions": str(captions), "split": split}
    _echo_report(report)
    if json_file is not None:
        write_json(json_file, report)
        typer.echo(f"all figures written to {json_file}")


def _echo_report(report: dict) -> None:
    """Counts and left-out images, the metric table, the sanity correlations and the causal drops."""
    from texplain.evaluation.table import format_table

    counts = report["images"]
    typer.echo(f"{counts['evaluated']} of {counts['requested']} images counted (references and a non-empty explanation)")
    for key, what in (("missing_references", "without reference captions"), ("unreadable", "unreadable"),
                      ("empty_explanations", "with an empty explanation")):
        if counts[key]:
            typer.echo(f"left out: {len(counts[key])} {what}", err=True)
    typer.echo(f"null prefix: {report['baselines']['null_prefix']}")
    typer.echo(f"METEOR matching: {report['meteor_matching']}; word matching: {report['word_matching']}")
    if "skipped" in report.get("bert_cosine", {}):
        typer.echo(f"bert_cosine skipped: {report['bert_cosine']['skipped']}")
    typer.echo(format_table(report))
    sanity = report["sanity"]
    typer.echo(f"shuffled pairing: spearman {_fmt(sanity['shuffled_pairing']['spearman'])}"
               + (f"; reseeded (ceiling): spearman {_fmt(sanity['reseeded']['spearman'])}" if "reseeded" in sanity else "")
               + (f"; same seed identical: {sanity['same_seed_identical']}" if "same_seed_identical" in sanity else ""))
    for step in sanity.get("cascade", []) if isinstance(sanity.get("cascade"), list) else []:
        moved = "" if step["features_changed"] else " (features unchanged)"
        typer.echo(f"cascade {step['stage']:<24} spearman {_fmt(step['spearman'])}  kendall {_fmt(step['kendall'])}{moved}")
    causal = report["causal"]
    if causal.get("word_frequency"):
        w, p = causal["word_frequency"], causal["class_probability"]
        typer.echo(f"causal ({causal['images']} images): word frequency {w['original']:.3f} → {w['masked']:.3f} masked "
                   f"(control {w['control']:.3f}); class probability {p['original']:.3f} → {p['masked']:.3f} (control {p['control']:.3f}); "
                   f"region: {causal['mask']['where']}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def rating_export_command(
    source: Annotated[Path, typer.Argument(help="An evaluate --json file, or a folder of `texplain explain` JSON records")],
    out: Annotated[Path, typer.Option(help="Folder for ratings.csv and form.html")],
    top_words: Annotated[int, typer.Option(help="Words per image to rate")] = RATING_WORDS,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N images")] = None,
) -> None:
    """Write a rating CSV and a self-contained HTML form for the paper's human study."""
    from texplain.evaluation.rating import export_rating, read_records

    records = read_records(source)
    written, skipped = export_rating(records[:limit] if limit else records, out, top_words)
    for image, reason in skipped:
        typer.echo(f"skipped {image}: {reason}", err=True)
    typer.echo(f"{written} images to rate: {out / 'form.html'} (answers export as CSV or JSON); {out / 'ratings.csv'}")


def rating_score_command(
    answers: Annotated[list[Path], typer.Argument(help="Filled-in ratings: the form's CSV/JSON export or the filled ratings.csv (one per rater)")],
    json_file: options.JsonFile = None,
) -> None:
    """Score filled-in rating forms: precision@k of the words and top-word/class agreement."""
    from texplain.atomic import check_output_file, write_json
    from texplain.evaluation.rating import read_answers, score_answers

    if json_file is not None:
        check_output_file(json_file)
    scores = score_answers([read_answers(path) for path in answers])
    pooled = scores["pooled"]
    typer.echo(f"{pooled['images']} images, {scores['raters']} rater(s): precision@k {_fmt(pooled['precision'])}, "
               f"top word matches class {_fmt(pooled['top_word_matches_class'])}")
    if scores.get("agreement") is not None:
        typer.echo(f"rater agreement on words: {scores['agreement']:.3f}")
    if json_file is not None:
        write_json(json_file, scores)
        typer.echo(f"scores written to {json_file}")
