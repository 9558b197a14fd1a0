"""The ``demo`` command: the whole pipeline, offline, on a synthetic world with a planted shortcut."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from texplain.cli import options
from texplain.demo.config import DemoConfig

DEMO = options.defaults(DemoConfig)


def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for the world, models, results, report and summary.json")] = DEMO.out,
    seed: options.Seed = DEMO.seed,
    fresh: Annotated[bool, typer.Option(help="Recompute every step instead of reusing cached ones")] = DEMO.fresh,
    balanced: Annotated[bool, typer.Option(help="Control: train the classifier on a balanced split")] = DEMO.balanced,
    bias: Annotated[float, typer.Option(help="Fraction of each class on its planted background in train")] = DEMO.bias,
    train_images: Annotated[int, typer.Option(help="Images in the labelled train split")] = DEMO.train_images,
    test_images: Annotated[int, typer.Option(help="Images in the balanced test split")] = DEMO.test_images,
    caption_images: Annotated[int, typer.Option(help="Captioned images for the LM and translator")] = DEMO.caption_images,
    samples: options.Samples = options.samples_default(DEMO.sampling),
    classifier: Annotated[str, typer.Option(
        help="A timm architecture trained from scratch (resnet10t: a small CNN) or vit (a small ViT)")] = DEMO.classifier,
    pretrain_epochs: Annotated[int, typer.Option(
        help="First train the classifier on the captioned scenes' objects (0: no pretraining)")] = DEMO.pretrain_epochs,
    classifier_epochs: Annotated[int, typer.Option(
        help="Epochs of the classifier on the biased train split")] = DEMO.classifier_epochs,
    device: options.Device = DEMO.device,
) -> None:
    """Run the whole pipeline offline on a synthetic world with a planted shortcut."""
    from texplain.demo.run import headline, run_demo

    config = DemoConfig(out=out, seed=seed, fresh=fresh, balanced=balanced, bias=bias, train_images=train_images,
                        test_images=test_images, caption_images=caption_images,
                        sampling=options.sampling_config(DEMO.sampling, samples, seed=seed), classifier=classifier,
                        pretrain_epochs=pretrain_epochs, classifier_epochs=classifier_epochs, device=device)
    summary = run_demo(config)
    accuracy = summary["accuracy"]
    typer.echo(f"classifier: average accuracy {accuracy['average']:.1%}, worst group {accuracy['worst_group']:.1%}")
    typer.echo(headline(summary))
    typer.echo(f"report: {out / 'report' / 'index.html'}")
