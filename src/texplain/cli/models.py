"""Commands that make models: ``pretrain-lm`` (a small caption LM) and ``train`` (a translator).

``train`` runs as one process, or as several under ``accelerate launch`` or
``torchrun`` (``accelerate launch -m texplain train …``): see docs/distributed.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from texplain.cli import options
from texplain.models.config import ExtractionConfig, TranslatorConfig
from texplain.training.config import CaptionLMConfig, Phase, TrainConfig

CAPTION_LM = options.defaults(CaptionLMConfig)
TRAIN = options.defaults(TrainConfig)
TRANSLATOR = options.defaults(TranslatorConfig)
EXTRACTION = options.defaults(ExtractionConfig)
PHASE = options.defaults(Phase)


def pretrain_lm_command(
    captions: Annotated[list[Path], typer.Option("--captions", help="Caption file (repeatable)")],
    out: Annotated[Path, typer.Option(help="Folder for the Hugging Face LM")],
    split: Annotated[Optional[str], typer.Option(help="Keep only this split (e.g. train)")] = "train",
    epochs: Annotated[int, typer.Option(help="Passes over the captions")] = CAPTION_LM.epochs,
    seed: options.Seed = CAPTION_LM.seed,
) -> None:
    """Pretrain a small GPT-2-style LM on caption text only, prefix-ready (the fast CPU default LM)."""
    from texplain.data.captions import caption_groups, read_caption_pairs
    from texplain.training.caption_lm import pretrain_caption_lm

    groups = caption_groups(read_caption_pairs(captions, split))
    folder = pretrain_caption_lm(groups, out, CaptionLMConfig(epochs=epochs, seed=seed))
    typer.echo(f"language model written to {folder}")


def train_command(
    classifier: options.ClassifierName,
    lm: Annotated[str, typer.Option(help="HF causal LM id or folder, a .gguf file, or smollm2")],
    captions: Annotated[list[str], typer.Option(
        "--captions", help="(image, caption) file, WebDataset tars or HF dataset folder for phase 1 (repeatable: a mix)")],
    out: Annotated[Path, typer.Option(help="Folder for the translator checkpoint")],
    features: Annotated[Optional[Path], typer.Option(help="Feature store folder (default: OUT/features)")] = None,
    finetune_captions: Annotated[Optional[list[str]], typer.Option("--finetune-captions", help="Caption set for phase 2")] = None,
    split: Annotated[Optional[str], typer.Option(help="Training split")] = "train",
    dev_split: Annotated[Optional[str], typer.Option(help="Split for the dev loss ('' for none)")] = "dev",
    epochs: Annotated[int, typer.Option(help="Epochs of phase 1")] = 20,
    finetune_epochs: Annotated[int, typer.Option(help="Epochs of phase 2")] = 5,
    lr: Annotated[float, typer.Option(help="Peak learning rate of phase 1")] = PHASE.lr,
    finetune_lr: Annotated[float, typer.Option(help="Peak learning rate of phase 2")] = 3e-4,
    batch_size: Annotated[str, typer.Option(
        help="Pairs per step, over all processes, or auto: as many as each GPU holds (64 on CPUs)")] = str(TRAIN.batch_size),
    accumulation: Annotated[int, typer.Option(help="Micro-batches per step (gradient accumulation)")] = TRAIN.accumulation,
    mixed_precision: Annotated[Optional[str], typer.Option(
        help="no, bf16 or fp16 on GPUs (default: the launcher's, else bf16 where the GPU has it); CPUs train in float32")
    ] = TRAIN.mixed_precision,
    prefix_len: Annotated[Optional[int], typer.Option(
        help=f"K, prefix slots (default: what the LM was pretrained with, else {TRANSLATOR.prefix_len})")] = None,
    hidden: Annotated[int, typer.Option(help="Translator hidden width")] = TRANSLATOR.hidden,
    mode: Annotated[str, typer.Option(help="auto, pooled, token, resampler or flatten")] = TRANSLATOR.mode,
    dropout: Annotated[float, typer.Option(help="Translator dropout before its last layer")] = TRANSLATOR.dropout,
    content_weight: Annotated[float, typer.Option(
        help="Weight of content words' tokens in the training loss, against 1 for the other tokens")] = TRAIN.content_weight,
    feature_layer: options.FeatureLayer = "",
    trust_code: options.TrustCode = False,
    fp16: options.Fp16 = EXTRACTION.fp16,
    feature_memory: Annotated[float, typer.Option(
        help="GB of training features held in memory per process; more are read per batch from the store")
    ] = TRAIN.feature_memory_gb,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images (of the caption files together, and of each streamed set)")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint")] = False,
    seed: options.Seed = TRAIN.seed,
    device: options.Device = TRAIN.device,
) -> None:
    """Train a translator from a classifier's features to an LM's prefix on (image, caption) pairs."""
    from texplain.atomic import check_writable
    from texplain.models.classifiers import load_classifier
    from texplain.models.lm import load_lm
    from texplain.training.translator_training import fit_translator

    check_writable(out)
    phases = [_phase("train", captions, split, limit, epochs, lr)]
    if finetune_captions:
        phases.append(_phase("finetune", finetune_captions, split, limit, finetune_epochs, finetune_lr))
    dev_pairs = _dev_pairs(captions, dev_split, limit) if dev_split else []
    _, history = fit_translator(
        load_classifier(classifier, feature_layer=feature_layer, trust_code=trust_code), load_lm(lm, trust_code=trust_code),
        phases, out,
        settings={"hidden": hidden, "mode": mode, "dropout": dropout, **({"prefix_len": prefix_len} if prefix_len else {})},
        config=TrainConfig(batch_size=options.batch_size(batch_size, "--batch-size"), seed=seed, device=device,
                           accumulation=accumulation, mixed_precision=mixed_precision,
                           feature_memory_gb=feature_memory, content_weight=content_weight),
        dev_pairs=dev_pairs, features=features, extraction=ExtractionConfig(fp16=fp16), resume=resume,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        last = history.epochs[-1] if history.epochs else {}
        typer.echo(f"translator written to {out} (last epoch: {last})")


def _phase(name: str, sources: list[str], split: str | None, limit: int | None, epochs: int, lr: float):
    """A training phase from caption files (read now) and streamed sets (read as their features are extracted)."""
    from texplain.data.caption_shards import is_caption_shards, open_caption_shards
    from texplain.data.captions import read_caption_pairs

    files = [s for s in sources if not is_caption_shards(s)]
    streams = [open_caption_shards(s, split, limit) for s in sources if is_caption_shards(s)]
    return Phase(name, read_caption_pairs(files, split, limit) if files else [], epochs, lr, streams)


def _dev_pairs(sources: list[str], split: str, limit: int | None):
    """The dev pairs of the caption files among ``sources`` (streamed sets give none)."""
    from texplain.data.caption_shards import is_caption_shards
    from texplain.data.captions import read_caption_pairs

    return read_caption_pairs([s for s in sources if not is_caption_shards(s)], split, limit, missing_ok=True)
