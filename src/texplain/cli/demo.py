"""The ``demo`` command: the whole pipeline, offline, on a synthetic world with a planted shortcut."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from texplain.cli import options


def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for the world, models, results, report and summary.json")] = Path("texplain-demo"),
    seed: options.Seed = options.SEED,
    fresh: Annotated[bool, typer.Option(help="Recompute every step instead of reusing cached ones")] = False,
    balanced: Annotated[bool, typer.Option(help="Control: train the classifier on a balanced split")] = False,
    bias: Annotated[float, typer.Option(help="Fraction of each class on its planted background in train")] = 0.95,
    train_images: Annotated[int, typer.Option(help="Images in the labelled train split")] = 600,
    test_images: Annotated[int, typer.Option(help="Images in the balanced test split")] = 270,
    caption_images: Annotated[int, typer.Option(help="Captioned images for the LM and translator")] = 1200,
    samples: options.Samples = 20,
    samples_mode: options.SamplesMode = None,
    classifier: Annotated[str, typer.Option(help="A timm architecture trained from scratch (resnet10t: a small CNN) or vit (a small ViT)")] = "resnet10t",
    pretrain_epochs: Annotated[int, typer.Option(help="First train the classifier on the captioned scenes' objects (0: no pretraining)")] = 8,
    classifier_epochs: Annotated[int, typer.Option(help="Epochs of the classifier on the biased train split")] = 10,
    device: options.Device = options.DEVICE,
) -> None:
    """Run the whole pipeline offline on a synthetic world with a planted shortcut."""
    from texplain.demo.run import DemoConfig, headline, run_demo

    sampling = options.sampling_config(samples_mode, samples, options.TOP_P, options.MIN_WORDS, options.MAX_WORDS, seed,
                                       default=20)
    config = DemoConfig(out=out, seed=seed, fresh=fresh, balanced=balanced, bias=bias, train_images=train_images,
                        test_images=test_images, caption_images=caption_images, samples=sampling.num_samples,
                        adaptive=sampling.adaptive, classifier=classifier, pretrain_epochs=pretrain_epochs,
                        classifier_epochs=classifier_epochs, device=device)
    summary = run_demo(config)
    accuracy = summary["accuracy"]
    typer.echo(f"classifier: average accuracy {accuracy['average']:.1%}, worst group {accuracy['worst_group']:.1%}")
    typer.echo(headline(summary))
    typer.echo(f"report: {out / 'report' / 'index.html'}")
