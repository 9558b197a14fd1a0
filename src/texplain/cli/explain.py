"""The ``explain`` command: one JSON record and one word cloud per image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from texplain.cli import options
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig

EXPLAIN = options.defaults(ExplainConfig)


def explain_command(
    target: Annotated[Path, typer.Argument(help="An image or a folder of images")],
    translator: options.Translator,
    out: Annotated[Path, typer.Option(help="Folder for JSON and word clouds")],
    classifier: options.ClassifierOverride = None,
    trust_code: options.TrustCode = False,
    lm: options.LMOverride = None,
    samples: options.Samples = options.samples_default(EXPLAIN.sampling),
    stop_k: options.StopK = EXPLAIN.sampling.stop.k,
    top_p: options.TopP = EXPLAIN.sampling.top_p,
    min_words: options.MinWords = EXPLAIN.sampling.min_words,
    max_words: options.MaxWords = EXPLAIN.sampling.max_words,
    sample_batch: options.SampleBatch = str(EXPLAIN.sampling.batch_size),
    top_words: options.TopWords = EXPLAIN.words.top_k,
    seed: options.Seed = EXPLAIN.sampling.seed,
    device: options.Device = options.DEVICE,
) -> None:
    """Explain an image or every image in a folder: JSON + word cloud per image."""
    from dataclasses import replace

    from texplain.data.images import images_in
    from texplain.models.explainer import load_explainer
    from texplain.report.explained_images import output_files, write_explanations

    sampling = options.sampling_config(EXPLAIN.sampling, samples, stop_k, sample_batch, top_p=top_p, min_words=min_words,
                                       max_words=max_words, seed=seed)
    config = ExplainConfig(sampling=sampling, words=replace(EXPLAIN.words, top_k=top_words))
    paths = images_in(target, skip=out)
    outputs = output_files(paths, out)  # before the models load: a bad --out fails at once
    explainer = load_explainer(translator, classifier, lm, device, trust_code)
    records, skipped = write_explanations(explainer, outputs, config)
    for record in records:
        words = ", ".join(w["word"] for w in record["top_words"][:8])
        typer.echo(f"{record['image']}: {record['prediction'][0]['name']} | {words}")
    for path, reason in skipped:
        typer.echo(f"skipped {reason}", err=True)
    if not records:
        raise TexplainError(f"nothing explained: {skipped[0][1]}" if len(skipped) == 1
                            else f"nothing explained: none of the {len(skipped)} images could be read")
    typer.echo(f"{len(records)} explained, {len(skipped)} skipped; results in {out}")
