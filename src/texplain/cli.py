"""The ``texplain`` command line: parse, build a config, make one library call, exit.

Every user-fixable problem is a :class:`~texplain.errors.TexplainError` and
comes out as one line, ``error: <message>``, with exit code 2; usage errors
exit 2 as well. :func:`main` takes the argument list, so tests call it
directly.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from texplain.commands_analysis import analyse, explain_dataset, hide_foreground, query
from texplain.commands_eval import evaluate, rating_export, rating_score
from texplain.commands_mitigate import mitigate
from texplain.errors import TexplainError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Explain what a frozen image classifier has learned, in words.",
)
log = logging.getLogger("texplain")

ClassifierOpt = Annotated[str, typer.Option("--classifier", "-c", help="timm:NAME, hf:ID, torchvision:NAME, efficientnet_lite0, a saved folder, or pkg.mod:factory")]
FeatureLayerOpt = Annotated[str, typer.Option(help="Module whose output (or NAME:input) is the feature; default: penultimate")]
SeedOpt = Annotated[int, typer.Option(help="Random seed")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps")]


@app.command("pretrain-lm")
def pretrain_lm(
    captions: Annotated[list[Path], typer.Option("--captions", help="Caption file (repeatable)")],
    out: Annotated[Path, typer.Option(help="Folder for the Hugging Face LM")],
    split: Annotated[Optional[str], typer.Option(help="Keep only this split (e.g. train)")] = "train",
    epochs: Annotated[int, typer.Option()] = 4,
    seed: SeedOpt = 0,
) -> None:
    """Pretrain a small GPT-2-style LM on caption text only (the fast CPU default LM)."""
    from texplain.data.captions import read_captions
    from texplain.smalllm import SmallLMConfig, pretrain_caption_lm

    texts = [p.caption for path in captions for p in read_captions(path, split=split)]
    folder = pretrain_caption_lm(texts, out, SmallLMConfig(epochs=epochs, seed=seed))
    typer.echo(f"language model written to {folder}")


@app.command()
def train(
    classifier: ClassifierOpt,
    lm: Annotated[str, typer.Option(help="HF causal LM id or folder, a .gguf file, or smollm2")],
    captions: Annotated[list[Path], typer.Option("--captions", help="(image, caption) file for phase 1 (repeatable: a mix)")],
    out: Annotated[Path, typer.Option(help="Folder for the translator checkpoint")],
    features: Annotated[Optional[Path], typer.Option(help="Feature store folder (default: OUT/features)")] = None,
    finetune_captions: Annotated[Optional[list[Path]], typer.Option("--finetune-captions", help="Caption file for phase 2")] = None,
    split: Annotated[Optional[str], typer.Option(help="Training split")] = "train",
    dev_split: Annotated[Optional[str], typer.Option(help="Split for the dev loss ('' for none)")] = "dev",
    epochs: Annotated[int, typer.Option()] = 20,
    finetune_epochs: Annotated[int, typer.Option()] = 5,
    lr: Annotated[float, typer.Option()] = 1e-3,
    finetune_lr: Annotated[float, typer.Option()] = 3e-4,
    batch_size: Annotated[int, typer.Option()] = 64,
    prefix_len: Annotated[int, typer.Option(help="K, prefix embeddings")] = 10,
    hidden: Annotated[int, typer.Option(help="Translator hidden width")] = 512,
    mode: Annotated[str, typer.Option(help="auto, token or flatten")] = "auto",
    feature_layer: FeatureLayerOpt = "",
    fp16: Annotated[bool, typer.Option(help="Store features as float16")] = False,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images (quick runs)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a translator from a classifier's features to an LM's prefix on (image, caption) pairs."""
    from texplain.pipeline import TrainRequest, train_from_files

    history = train_from_files(
        TrainRequest(
            classifier=classifier, lm=lm, captions=captions, finetune_captions=finetune_captions or [], out=out,
            features=features, split=split, dev_split=dev_split or None, epochs=epochs, finetune_epochs=finetune_epochs,
            lr=lr, finetune_lr=finetune_lr, batch_size=batch_size, prefix_len=prefix_len, hidden=hidden, mode=mode,
            feature_layer=feature_layer, fp16=fp16, limit=limit, resume=resume, seed=seed, device=device,
        )
    )
    last = history.epochs[-1] if history.epochs else {}
    typer.echo(f"translator written to {out} (last epoch: {last})")


@app.command()
def explain(
    target: Annotated[Path, typer.Argument(help="An image or a folder of images")],
    translator: Annotated[Path, typer.Option(help="Translator checkpoint folder")],
    out: Annotated[Path, typer.Option(help="Folder for JSON and word clouds")],
    classifier: Annotated[Optional[str], typer.Option("--classifier", "-c", help="Default: the one the translator was trained for")] = None,
    lm: Annotated[Optional[str], typer.Option(help="Default: the LM the translator was trained for")] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Sentences per image")] = 1000,
    top_p: Annotated[float, typer.Option(help="Nucleus mass")] = 0.95,
    min_words: Annotated[int, typer.Option()] = 20,
    max_words: Annotated[int, typer.Option()] = 30,
    top_k: Annotated[int, typer.Option(help="Words kept")] = 20,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Explain an image or every image in a folder: JSON + word cloud per image."""
    from texplain.pipeline import ExplainRequest, explain_from_files

    records, skipped = explain_from_files(
        ExplainRequest(target=target, translator=translator, out=out, classifier=classifier, lm=lm, samples=samples,
                       top_p=top_p, min_words=min_words, max_words=max_words, top_k=top_k, seed=seed, device=device)
    )
    for record in records:
        words = ", ".join(w["word"] for w in record["top_words"][:8])
        typer.echo(f"{record['image']}: {record['prediction'][0]['name']} | {words}")
    for path, reason in skipped:
        typer.echo(f"skipped {reason}", err=True)
    typer.echo(f"{len(records)} explained, {len(skipped)} skipped; results in {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the world, models, report and summary.json")] = Path("texplain-demo"),
    seed: SeedOpt = 0,
    fresh: Annotated[bool, typer.Option(help="Recompute every step instead of reusing cached ones")] = False,
    balanced: Annotated[bool, typer.Option(help="Control: train the classifier on a balanced split")] = False,
    bias: Annotated[float, typer.Option(help="Fraction of each class on its planted background in train")] = 0.95,
    train_images: Annotated[int, typer.Option(help="Images in the labelled train split")] = 600,
    test_images: Annotated[int, typer.Option(help="Images in the balanced test split")] = 270,
    caption_images: Annotated[int, typer.Option(help="Captioned images for the LM and translator")] = 1200,
    samples: Annotated[int, typer.Option(help="Sentences per test image")] = 20,
    classifier: Annotated[str, typer.Option(help="vit (a small ViT) or a timm architecture trained from scratch, e.g. resnet10t")] = "vit",
    pretrain_epochs: Annotated[int, typer.Option(help="First train the classifier on the captioned scenes' objects (0: no pretraining)")] = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Run the whole pipeline offline on a synthetic world with a planted shortcut."""
    from texplain.demo import DemoConfig, headline, run_demo

    config = DemoConfig(out=out, seed=seed, fresh=fresh, balanced=balanced, bias=bias, train_images=train_images,
                        test_images=test_images, caption_images=caption_images, samples=samples, classifier=classifier,
                        pretrain_epochs=pretrain_epochs, device=device)
    summary = run_demo(config)
    accuracy = summary["accuracy"]
    typer.echo(f"classifier: average accuracy {accuracy['average']:.1%}, worst group {accuracy['worst_group']:.1%}")
    typer.echo(headline(summary))
    typer.echo(f"report: {out / 'report' / 'index.html'}")


for name, command in (
    ("explain-dataset", explain_dataset),
    ("hide-foreground", hide_foreground),
    ("analyse", analyse),
    ("query", query),
    ("evaluate", evaluate),
    ("rating-export", rating_export),
    ("rating-score", rating_score),
    ("mitigate", mitigate),
):
    app.command(name)(command)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv``; returns the exit code instead of exiting."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="texplain", standalone_mode=False)
    except TexplainError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        typer.echo("aborted", err=True)
        return 130
    return 0


def run() -> None:
    """Console-script entry point.

    Sets OpenMP's passive wait policy before torch loads: with the default
    spinning threads, a busy second core makes two-thread torch several
    times slower.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
