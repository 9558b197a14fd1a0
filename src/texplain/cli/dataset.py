"""Commands for a labelled image set: ``explain-dataset``, ``hide-foreground``, ``analyse`` and ``query``.

``analyse`` and ``query`` read an existing results folder and import neither
torch nor the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from texplain.analysis.config import AnalysisConfig, DatasetExplainConfig
from texplain.cli import options
from texplain.errors import TexplainError
from texplain.report.config import ReportConfig

DATASET = options.defaults(DatasetExplainConfig)
ANALYSIS = options.defaults(AnalysisConfig)
REPORT = options.defaults(ReportConfig)


def explain_dataset_command(
    data: options.LabelledData,
    translator: options.Translator,
    out: Annotated[Path, typer.Option(help="Results folder (Parquet parts + manifest); rerun to resume")],
    split: Annotated[Optional[str], typer.Option(help="Explain only this split")] = None,
    classifier: options.ClassifierOverride = None,
    trust_code: options.TrustCode = False,
    lm: options.LMOverride = None,
    samples: options.Samples = options.samples_default(DATASET.explain.sampling),
    stop_k: options.StopK = DATASET.explain.sampling.stop.k,
    top_p: options.TopP = DATASET.explain.sampling.top_p,
    min_words: options.MinWords = DATASET.explain.sampling.min_words,
    max_words: options.MaxWords = DATASET.explain.sampling.max_words,
    sample_batch: options.SampleBatch = str(DATASET.explain.sampling.batch_size),
    examples: Annotated[int, typer.Option(help="Sample sentences kept per image")] = DATASET.explain.examples,
    chunk_size: Annotated[int, typer.Option(help="Images per Parquet part")] = DATASET.chunk_size,
    features: Annotated[Optional[Path], typer.Option(help="Feature store folder (default: OUT/features)")] = None,
    fp16: options.Fp16 = DATASET.extraction.fp16,
    class_words: options.ClassWords = None,
    wordnet: options.WordNet = DATASET.class_words.wordnet,
    prior: Annotated[str, typer.Option(
        help="Null prefixes of the LM prior, any of blank,mean,shuffled,lm (the LM alone), or none")
    ] = ",".join(DATASET.prior.kinds),
    allow_unknown_labels: Annotated[bool, typer.Option(
        help="Explain labels the classifier does not have")] = DATASET.allow_unknown_labels,
    seed: options.Seed = DATASET.explain.sampling.seed,
    device: options.Device = options.DEVICE,
    engine: Annotated[str, typer.Option(
        is_eager=True, help="local (this process) or ray (actors on a Ray cluster)")] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="With --engine ray: the cluster, host:port or ray://host:port (default: RAY_ADDRESS, else a local one)")] = None,
    actors: Annotated[Optional[int], typer.Option(
        help="With --engine ray: actors (default: one per GPU, or the cluster's CPUs over --cpus-per-actor)")] = None,
    cpus_per_actor: Annotated[int, typer.Option(help="With --engine ray --device cpu: cores per actor")] = 1,
) -> None:
    """Explain a labelled image set into Parquet: per image its prediction and word counts; resumable."""
    from dataclasses import replace

    from texplain.analysis.explain_dataset import explain_dataset
    from texplain.atomic import check_writable
    from texplain.data.labelled import read_labelled
    from texplain.models.explainer import load_explainer

    if engine not in ("local", "ray"):
        raise TexplainError(f"--engine {engine}: choose local or ray")
    if engine == "local" and (address or actors):
        raise TexplainError("--address and --actors are for --engine ray")
    check_writable(out)
    runner = None
    if engine == "ray":
        from texplain.analysis.ray_engine import RayEngine
        from texplain.analysis.results import RAY_FILES

        runner = RayEngine(str(translator), classifier, lm, device, address, actors, cpus_per_actor, trust_code,
                           temp_dir=str(out / RAY_FILES))
        runner.connect()
    try:
        items = read_labelled(data, split=split, skip=out)
        kinds = tuple(k.strip() for k in prior.split(",") if k.strip())
        sampling = options.sampling_config(DATASET.explain.sampling, samples, stop_k, sample_batch, top_p=top_p,
                                           min_words=min_words, max_words=max_words, seed=seed)
        config = DatasetExplainConfig(
            explain=replace(DATASET.explain, sampling=sampling, examples=examples),
            chunk_size=chunk_size,
            class_words=options.class_word_config(class_words, wordnet),
            prior=None if kinds == ("none",) else replace(DATASET.prior, kinds=kinds, seed=seed),
            allow_unknown_labels=allow_unknown_labels,
            extraction=replace(DATASET.extraction, fp16=fp16),
        )
        # Under Ray the actors explain; this process names the settings and makes the LM prior, on its CPU.
        explainer = load_explainer(translator, classifier, lm, "cpu" if runner else device, trust_code)
        result = explain_dataset(explainer, items, out, config, features=features, engine=runner)
    finally:
        if runner is not None:
            runner.close()  # a Ray instance started here stops, and its files go
    for path, reason in result.skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(f"{result.written} images explained now, {result.total} in {out}; {len(result.skipped)} skipped")


def hide_foreground_command(
    data: options.LabelledData,
    masks: Annotated[Path, typer.Option(help="Folder of masks named like the images (non-zero = foreground)")],
    out: Annotated[Path, typer.Option(help="Folder for the hidden copies and their labels.jsonl")],
    split: Annotated[Optional[str], typer.Option(help="Only this split")] = None,
) -> None:
    """Write copies of the images with the foreground blacked out, for the only-background test."""
    from texplain.analysis.only_background import write_hidden_set
    from texplain.data.labelled import read_labelled

    listing = data / "metadata.json" if data.is_dir() else data
    hidden = write_hidden_set(read_labelled(data, split=split, skip=out), masks, out, inputs=[listing])
    typer.echo(f"{len(hidden)} images with the foreground hidden; explain them with "
               f"texplain explain-dataset {out / 'labels.jsonl'}")


def analyse_command(
    results: Annotated[Path, typer.Argument(help="Results folder from explain-dataset")],
    out: Annotated[Path, typer.Option(help="Report folder (replaced only once the new report is complete)")],
    only_background: Annotated[Optional[Path], typer.Option(help="Results of the same images, foreground hidden")] = None,
    by: Annotated[str, typer.Option(help="Pool images by their label or by the predicted class")] = ANALYSIS.by,
    compare: Annotated[Optional[str], typer.Option(
        help="Two splits to compare, e.g. train,test (default: those two)")] = None,
    top_words: Annotated[int, typer.Option(help="Words per class and split")] = ANALYSIS.top_words,
    suspects: Annotated[int, typer.Option(help="Suspects per class")] = ANALYSIS.suspects.limit,
    min_frequency: options.MinFrequency = ANALYSIS.suspects.min_frequency,
    min_z: Annotated[float, typer.Option(
        help="Least log-odds z of a suspect vs other classes and vs the prior")] = ANALYSIS.suspects.min_z,
    min_lift: options.MinLift = ANALYSIS.suspects.min_lift,
    suspect_split: Annotated[Optional[str], typer.Option(help="Find suspects in this split only")] = ANALYSIS.suspect_split,
    images_per_class: Annotated[int, typer.Option(
        help="Example images per class and split in the report")] = REPORT.images_per_class,
    title: Annotated[str, typer.Option(help="Report title")] = REPORT.title,
) -> None:
    """Aggregate per class and split, rank shortcut suspects, and write the HTML report."""
    from dataclasses import replace

    from texplain.analysis.analyse import analyse_folders
    from texplain.report.html_report import check_report_folder, write_report

    check_report_folder(out)
    pair = tuple(s.strip() for s in compare.split(",")) if compare else None
    if pair is not None and len(pair) != 2:
        raise TexplainError(f"--compare needs two splits separated by a comma, got {compare!r}")
    rule = replace(ANALYSIS.suspects, min_frequency=min_frequency, min_lift=min_lift, min_z=min_z, limit=suspects)
    config = AnalysisConfig(by=by, top_words=top_words, compare=pair, suspect_split=suspect_split, suspects=rule)
    folder, analysis, hidden = analyse_folders(results, config, only_background)
    if not folder.complete:
        typer.echo(f"note: {results} is not complete (explain-dataset was interrupted); analysing the rows so far", err=True)
    index = write_report(out, folder, analysis, hidden, ReportConfig(title=title, images_per_class=images_per_class))
    for name, report in analysis.classes.items():
        others = [w.word for w in report.words["all"] if not w.is_class][:5]
        typer.echo(f"{name}: top non-class words: {', '.join(others) or '-'}; "
                   f"suspects: {', '.join(s.word for s in report.suspects) or 'none'}")
        if hidden and name in hidden:
            h = hidden[name]
            typer.echo(f"  only background: prediction persists {h.persists:.0%}, still '{name}' {h.still_label:.0%}; "
                       f"words that remain: {', '.join(h.remaining) or 'none'}")
    for note in analysis.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"report: {index}")


def query_command(
    results: Annotated[Path, typer.Argument(help="Results folder from explain-dataset")],
    sql: Annotated[Optional[str], typer.Argument(help="SQL over the views 'results' and 'words' (see docs/queries.md)")] = None,
    top_word: Annotated[Optional[str], typer.Option(help="Images whose most frequent word is this")] = None,
    word: Annotated[Optional[str], typer.Option(help="Images whose sentences say this word, strongest first")] = None,
    class_top_words: Annotated[Optional[str], typer.Option(help="Top words of the images with this label")] = None,
    misclassified: Annotated[bool, typer.Option(help="Images the classifier gets wrong")] = False,
    format: Annotated[str, typer.Option(help="table, csv or json")] = "table",
) -> None:
    """Query the Parquet results with DuckDB SQL, or ask a named question."""
    from texplain.analysis.query import run_canned, run_query

    named = {"top-word": top_word, "word": word, "class-top-words": class_top_words,
             "misclassified": "" if misclassified else None}
    chosen = [(name, arg) for name, arg in named.items() if arg is not None]
    if len(chosen) + (sql is not None) != 1:
        raise TexplainError("query: give either SQL or one of --top-word, --word, --class-top-words, --misclassified")
    result = run_query(results, sql) if sql is not None else run_canned(results, *chosen[0])
    typer.echo(result.format(format), nl=False)
