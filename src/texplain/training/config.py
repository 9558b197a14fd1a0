"""The training room's settings: the translator's optimisation and phases, the caption LM, image classifiers.

They live apart from the training loops (:mod:`.translator_training`,
:mod:`.caption_lm`, :mod:`.word_context`, :mod:`.classifier_training`) so
that the command line reads their defaults without loading torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from texplain.errors import TexplainError

if TYPE_CHECKING:
    from texplain.data.caption_shards import CaptionShards
    from texplain.data.captions import CaptionPair


@dataclass
class TrainConfig:
    """Optimisation settings shared by all phases.

    batch_size: pairs per optimizer step, over all processes, or ``"auto"``:
    on a GPU the most a micro-batch of each process holds in memory (at most
    :data:`~.translator_training.AUTO_MAX_BATCH`) times processes and micro-batches; on a CPU
    :data:`~.translator_training.CPU_AUTO_BATCH`. The size chosen is logged and kept in the
    checkpoint, so that a resumed run keeps it. weight_decay:
    AdamW's. warmup_steps: linear warm-up at the start of each phase (capped
    at a tenth of the phase). clip: gradient-norm clipping. max_tokens:
    caption tokens kept (EOS included). seed: shuffling and dropout. device:
    where the translator and LM run (under a launcher: ``cuda`` is each
    process's own GPU). accumulation: micro-batches per step (gradients add
    up; batch norm sees one micro-batch at a time). mixed_precision:
    ``bf16``, ``fp16`` or ``no`` on GPUs; None takes the launcher's, else
    bfloat16 on a GPU that has it, else float32; CPUs train in float32.
    feature_memory_gb: the training set's
    features are held in memory when they take no more than this, else read
    per batch from the memory-mapped store. content_weight: how much more
    the tokens of content words weigh in the training loss than other tokens
    (:mod:`texplain.training.content_weights`; the dev loss stays unweighted).
    """

    batch_size: int | str = 64
    weight_decay: float = 0.01
    warmup_steps: int = 100
    clip: float = 1.0
    max_tokens: int = 40
    seed: int = 0
    device: str = "cpu"
    accumulation: int = 1
    mixed_precision: str | None = None
    feature_memory_gb: float = 4.0
    content_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.content_weight > 0:
            raise TexplainError(f"training: content_weight must be positive, got {self.content_weight}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise TexplainError(f"training: batch_size must be auto or at least 1, got {self.batch_size!r}")
        if self.max_tokens < 2 or self.accumulation < 1:
            raise TexplainError("training: accumulation must be ≥ 1 and max_tokens ≥ 2")
        if self.clip <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise TexplainError("training: clip must be > 0, weight_decay and warmup_steps ≥ 0")
        if isinstance(self.batch_size, int) and self.accumulation > self.batch_size:
            raise TexplainError(f"training: {self.accumulation} micro-batches cannot share a batch of {self.batch_size}")


@dataclass
class Phase:
    """One stage of training: its (image, caption) pairs, epochs and peak learning rate.

    ``streams``: streamed caption sets whose pairs join ``pairs`` once their
    features are extracted (:func:`~.translator_training.fit_translator`).
    """

    name: str
    pairs: Sequence[CaptionPair]
    epochs: int
    lr: float = 1e-3
    streams: Sequence[CaptionShards] = ()

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0:
            raise TexplainError(f"training phase {self.name}: epochs must be ≥ 0 and lr > 0")
        if self.epochs and not self.pairs and not self.streams:
            raise TexplainError(f"training phase {self.name}: no (image, caption) pairs")


@dataclass(frozen=True)
class ContextRecipe:
    """How contexts are drawn when pretraining a prefix-ready LM.

    slots: K, context slots before each caption (0: the LM reads no context).
    empty: fraction of captions with the empty context (all null slots).
    drop: fraction of word slots made null. mix: fraction of word slots that
    mix two or three of the image's words. noise: fraction of word slots
    replaced by a random word.
    """

    slots: int = 8
    empty: float = 0.2
    drop: float = 0.2
    mix: float = 0.2
    noise: float = 0.05

    def __post_init__(self) -> None:
        if self.slots < 0:
            raise TexplainError(f"context: slots must be 0 or more, got {self.slots}")
        for name in ("empty", "drop", "mix", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TexplainError(f"context: {name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class CaptionLMConfig:
    """Size, context recipe and training schedule of the caption LM.

    Attributes:
        n_layer: Transformer blocks.
        n_embd: Width of the model (and of the prefix the translator makes).
        n_head: Attention heads; must divide ``n_embd``.
        n_positions: Most positions the model reads: context, start token and sentence.
        vocab_size: Target size of the byte-level BPE vocabulary (it can come
            out smaller on a small caption set).
        context: How each caption's context is drawn (:class:`ContextRecipe`);
            ``slots=0`` gives an LM that reads no context.
        epochs: Passes over the training captions.
        batch_size: Captions per optimizer step.
        lr: Peak learning rate of AdamW, reached after the warm-up.
        seed: Seeds the dev split, the contexts, the order of batches and the weights.
        max_tokens: Tokens kept per caption, its end-of-sentence included;
            longer captions are cut (few are).
        warmup_fraction: Fraction of the steps over which the learning rate
            rises linearly from 0; it then decays along a cosine to
            ``min_lr_ratio * lr``.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        weight_decay: AdamW decay on weight matrices (not on biases, norms).
        grad_clip: Gradients are clipped to this global norm.
        dropout: Dropout of GPT-2's residual, embedding and attention paths.
        dev_fraction: Fraction of the images (caption groups) held out to
            report dev losses: without context, with the right context and
            with another image's.
    """

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 128
    vocab_size: int = 4096
    context: ContextRecipe = field(default_factory=ContextRecipe)
    epochs: int = 3
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    max_tokens: int = 40
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0
    dev_fraction: float = 0.03

    def __post_init__(self) -> None:
        if isinstance(self.context, dict):
            self.context = ContextRecipe(**self.context)
        for name in ("n_layer", "n_embd", "n_head", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TexplainError(f"caption LM: {name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise TexplainError(f"caption LM: n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if self.vocab_size < 300:
            raise TexplainError(f"caption LM: vocab_size must be at least 300 (256 bytes + merges), got {self.vocab_size}")
        if not 2 <= self.max_tokens or self.context.slots + self.max_tokens + 1 > self.n_positions:
            raise TexplainError(
                f"caption LM: context slots + max_tokens + 1 must fit in n_positions={self.n_positions} "
                f"(max_tokens at least 2), got {self.context.slots} + {self.max_tokens} + 1"
            )
        if not self.lr > 0:
            raise TexplainError(f"caption LM: lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise TexplainError(f"caption LM: warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TexplainError(f"caption LM: min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise TexplainError("caption LM: weight_decay must be >= 0 and grad_clip > 0")
        if not 0 <= self.dropout < 1:
            raise TexplainError(f"caption LM: dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.dev_fraction < 0.5:
            raise TexplainError(f"caption LM: dev_fraction must be in [0, 0.5), got {self.dev_fraction}")

    @property
    def recipe(self) -> dict | None:
        """What a translator must match: the context format (stored in ``config.json``); None without context."""
        if not self.context.slots:
            return None
        return {"format": "word-slots", "slots": self.context.slots, "start": "eos"}


TRAINABLE = ("head", "last-stages", "all")
"""What classifier training may train (:mod:`.frozen_front`)."""


@dataclass
class ClassifierTrainConfig:
    """Settings for training a classifier: epochs, batch size, AdamW's lr and decay, seed, device, what learns.

    trainable: ``all``, ``head`` (the last linear layer alone, the rest frozen
    in eval mode, batch-norm statistics included, so the features stay
    exactly those of the classifier it started from) or ``last-stages``
    (the backbone's last stage and the head; :mod:`.frozen_front`).
    backbone_lr: the learning rate of the trained weights outside the head,
    as a fraction of ``lr`` (fine-tuning moves a pretrained backbone less
    than its new head). patience: with a held-out set, training stops after
    this many epochs without a lower held-out loss, and the best epoch's
    weights are kept; ``epochs`` is then the most it runs.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    device: str = "cpu"
    trainable: str = "all"
    backbone_lr: float = 1.0
    patience: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise TexplainError("classifier training: epochs and batch_size must be ≥ 1 and lr > 0")
        if self.trainable not in TRAINABLE:
            raise TexplainError(f"classifier training: trainable {self.trainable!r}: choose {', '.join(TRAINABLE)}")
        if not 0 < self.backbone_lr <= 1 or self.patience < 1:
            raise TexplainError("classifier training: backbone_lr must be in (0, 1] and patience ≥ 1")
