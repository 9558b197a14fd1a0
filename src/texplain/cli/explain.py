"""The ``explain`` command: one JSON record and one word cloud per image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from texplain.cli import options
from texplain.errors import TexplainError


def explain_command(
    target: Annotated[Path, typer.Argument(help="An image or a folder of images")],
    translator: options.Translator,
    out: Annotated[Path, typer.Option(help="Folder for JSON and word clouds")],
    classifier: options.ClassifierOverride = None,
    trust_code: options.TrustCode = False,
    lm: options.LMOverride = None,
    samples: options.Samples = options.SAMPLES,
    samples_mode: options.SamplesMode = None,
    stop_k: options.StopK = options.STOP_K,
    top_p: options.TopP = options.TOP_P,
    min_words: options.MinWords = options.MIN_WORDS,
    max_words: options.MaxWords = options.MAX_WORDS,
    top_k: options.TopK = options.TOP_K,
    seed: options.Seed = options.SEED,
    device: options.Device = options.DEVICE,
) -> None:
    """Explain an image or every image in a folder: JSON + word cloud per image."""
    from texplain.data.images import images_in
    from texplain.generate.explain import ExplainConfig
    from texplain.models.explainer import load_explainer
    from texplain.report.explained_images import output_files, write_explanations
    from texplain.text.words import WordConfig

    config = ExplainConfig(sampling=options.sampling_config(samples_mode, samples, top_p, min_words, max_words, seed, stop_k),
                           words=WordConfig(top_k=top_k))
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
