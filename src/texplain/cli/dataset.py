"""Commands for a labelled image set: ``explain-dataset``, ``hide-foreground``, ``analyse`` and ``query``.

``analyse`` and ``query`` read an existing results folder and import neither
torch nor the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from texplain.cli import options
from texplain.errors import TexplainError

PRIOR_KINDS = "blank,mean,shuffled,lm"


def explain_dataset_command(
    source: Annotated[Path, typer.Argument(help="Class folders, BAR metadata.json, or CSV/JSONL with path, label, split, group")],
    translator: options.Translator,
    out: Annotated[Path, typer.Option(help="Results folder (Parquet parts + manifest); rerun to resume")],
    split: Annotated[Optional[str], typer.Option(help="Explain only this split")] = None,
    classifier: options.ClassifierOverride = None,
    trust_code: options.TrustCode = False,
    lm: options.LMOverride = None,
    samples: options.Samples = options.SAMPLES,
    samples_mode: options.SamplesMode = None,
    stop_k: options.StopK = options.STOP_K,
    top_p: options.TopP = options.TOP_P,
    min_words: options.MinWords = options.MIN_WORDS,
    max_words: options.MaxWords = options.MAX_WORDS,
    sample_batch: Annotated[str, typer.Option(
        help="Sentences decoded together, or auto: 250 on CPUs, as many as 40% of the GPU's free memory holds")
    ] = options.SAMPLE_BATCH,
    examples: Annotated[int, typer.Option(help="Sample sentences kept per image")] = 5,
    chunk_size: Annotated[int, typer.Option(help="Images per Parquet part")] = 64,
    features: Annotated[Optional[Path], typer.Option(help="Feature store folder (default: OUT/features)")] = None,
    fp16: options.Fp16 = False,
    class_words: options.ClassWords = None,
    wordnet: options.WordNet = True,
    prior: Annotated[str, typer.Option(help="Null prefixes of the LM prior, any of blank,mean,shuffled,lm (the LM alone), or none")] = PRIOR_KINDS,
    allow_unknown_labels: Annotated[bool, typer.Option(help="Explain labels the classifier does not have")] = False,
    seed: options.Seed = options.SEED,
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
    from texplain.analysis.explain_dataset import DatasetExplainConfig, explain_dataset
    from texplain.analysis.lm_prior import PriorConfig
    from texplain.atomic import check_writable
    from texplain.data.labelled import read_labelled
    from texplain.generate.explain import ExplainConfig
    from texplain.models.explainer import load_explainer
    from texplain.models.features import ExtractionConfig

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
        items = read_labelled(source, split=split, skip=out)
        kinds = tuple(k.strip() for k in prior.split(",") if k.strip())
        config = DatasetExplainConfig(
            explain=ExplainConfig(
                sampling=options.sampling_config(samples_mode, samples, top_p, min_words, max_words, seed, stop_k,
                                                 batch_size=options.batch_size(sample_batch, "--sample-batch")),
                examples=examples, word_cloud=False,
            ),
            chunk_size=chunk_size,
            class_words=options.class_word_config(class_words, wordnet),
            prior=None if kinds == ("none",) else PriorConfig(kinds=kinds, seed=seed),
            allow_unknown_labels=allow_unknown_labels,
            extraction=ExtractionConfig(fp16=fp16),
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
    source: Annotated[Path, typer.Argument(help="Labelled image set (as for explain-dataset)")],
    masks: Annotated[Path, typer.Option(help="Folder of masks named like the images (non-zero = foreground)")],
    out: Annotated[Path, typer.Option(help="Folder for the hidden copies and their labels.jsonl")],
    split: Annotated[Optional[str], typer.Option(help="Only this split")] = None,
) -> None:
    """Write copies of the images with the foreground blacked out, for the only-background test."""
    from texplain.analysis.only_background import write_hidden_set
    from texplain.data.labelled import read_labelled

    listing = source / "metadata.json" if source.is_dir() else source
    hidden = write_hidden_set(read_labelled(source, split=split, skip=out), masks, out, inputs=[listing])
    typer.echo(f"{len(hidden)} images with the foreground hidden; explain them with "
               f"texplain explain-dataset {out / 'labels.jsonl'}")


def analyse_command(
    results: Annotated[Path, typer.Argument(help="Results folder from explain-dataset")],
    out: Annotated[Path, typer.Option(help="Report folder (replaced only once the new report is complete)")],
    only_background: Annotated[Optional[Path], typer.Option(help="Results of the same images, foreground hidden")] = None,
    by: Annotated[str, typer.Option(help="Pool images by their label or by the predicted class")] = "label",
    compare: Annotated[Optional[str], typer.Option(help="Two splits to compare, e.g. train,test (default: those two)")] = None,
    top_words: Annotated[int, typer.Option(help="Words per class and split")] = 20,
    suspects: Annotated[int, typer.Option(help="Suspects per class")] = 5,
    min_frequency: Annotated[float, typer.Option(help="A suspect is in at least this fraction of sentences")] = 0.05,
    min_z: Annotated[float, typer.Option(help="Least log-odds z of a suspect vs other classes and vs the prior")] = 1.96,
    min_lift: Annotated[float, typer.Option(help="Least lift of a suspect over the LM prior")] = 1.25,
    suspect_split: Annotated[Optional[str], typer.Option(help="Find suspects in this split only")] = None,
    images_per_class: Annotated[int, typer.Option(help="Example images per class and split in the report")] = 6,
    title: Annotated[str, typer.Option(help="Report title")] = "texplain: what the classifier's features say",
) -> None:
    """Aggregate per class and split, rank shortcut suspects, and write the HTML report."""
    from texplain.analysis.analyse import AnalysisConfig, analyse_folders
    from texplain.analysis.suspects import SuspectRule
    from texplain.report.html_report import ReportConfig, check_report_folder, write_report

    check_report_folder(out)
    pair = tuple(s.strip() for s in compare.split(",")) if compare else None
    if pair is not None and len(pair) != 2:
        raise TexplainError(f"--compare needs two splits separated by a comma, got {compare!r}")
    config = AnalysisConfig(by=by, top_words=top_words, compare=pair, suspect_split=suspect_split,
                            suspects=SuspectRule(min_frequency=min_frequency, min_lift=min_lift, min_z=min_z, limit=suspects))
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
