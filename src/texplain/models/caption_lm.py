"""A small GPT-2-style language model pretrained on caption text only.

TExplain needs a frozen LM that writes captions. Large pretrained LMs do, but
sample a few sentences per second on a CPU; a model of a few million
parameters trained on the caption set itself samples hundreds, and knows
exactly the vocabulary the translator will be trained on. This module trains
one from scratch and saves it as an ordinary Hugging Face folder that
:func:`texplain.models.lm.load_lm` loads like any other LM.

The tokenizer is a byte-level BPE trained on the captions, so that word
starts are 'Ġ' tokens as in GPT-2 (the sampler counts words by them). Each
training sequence is ``<eos> caption <eos>``: the leading end-of-sentence
token plays GPT-2's beginning-of-text role, and the model learns where a
caption ends. Positions are offset at random per sequence, so every position
embedding is trained even though captions are much shorter than
``n_positions``; TExplain's prefix then moves the caption to later positions
without leaving what the model learned.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from texplain.atomic import building_folder
from texplain.errors import TexplainError
from texplain.models.lm import IGNORE_INDEX

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
"""The one special token: end of caption, and (GPT-2 style) beginning and padding too."""

METADATA_FILE = "texplain_lm.json"
"""Written beside the model: the training config and the final losses."""


@dataclass
class CaptionLMConfig:
    """Size and training schedule of the caption LM.

    Attributes:
        n_layer: Transformer blocks.
        n_embd: Width of the model (and of the prefix the translator makes).
        n_head: Attention heads; must divide ``n_embd``.
        n_positions: Most positions the model reads: prefix plus sentence.
        vocab_size: Target size of the byte-level BPE vocabulary (it can come
            out smaller on a small caption set).
        epochs: Passes over the training captions.
        batch_size: Captions per optimizer step.
        lr: Peak learning rate of AdamW, reached after the warm-up.
        seed: Seeds the dev split, the order of batches and the weights.
        max_tokens: Tokens kept per caption, its end-of-sentence included;
            longer captions are cut (few are). With the leading
            end-of-sentence token a sequence fills ``max_tokens + 1``
            positions, which must be fewer than ``n_positions``.
        warmup_fraction: Fraction of the steps over which the learning rate
            rises linearly from 0; it then decays along a cosine to
            ``min_lr_ratio * lr``.
        min_lr_ratio: Final learning rate as a fraction of ``lr``.
        weight_decay: AdamW decay on weight matrices (not on biases, norms).
        grad_clip: Gradients are clipped to this global norm.
        dropout: Dropout of GPT-2's residual, embedding and attention paths.
        dev_fraction: Fraction of captions held out to report a dev loss
            (on single captions).
        join_next: When captions come in groups (several of one image), the
            fraction of training sequences in which a caption is followed by
            the next one of its group before the final end-of-sentence.
            TExplain samples 20-30 words, about two captions, with
            end-of-sentence forbidden before 20 words: a model that only ever
            saw single captions writes noise after its first full stop.
            Ungrouped captions are never joined.
    """

    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 128
    vocab_size: int = 4096
    epochs: int = 2
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    max_tokens: int = 48
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0
    dev_fraction: float = 0.03
    join_next: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_embd", "n_head", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TexplainError(f"caption LM: {name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise TexplainError(f"caption LM: n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if self.vocab_size < 300:
            raise TexplainError(f"caption LM: vocab_size must be at least 300 (256 bytes + merges), got {self.vocab_size}")
        if not 2 <= self.max_tokens < self.n_positions:
            raise TexplainError(f"caption LM: max_tokens must be in [2, n_positions={self.n_positions}), got {self.max_tokens}")
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
        if not 0 <= self.join_next <= 1:
            raise TexplainError(f"caption LM: join_next must be in [0, 1], got {self.join_next}")


def train_caption_tokenizer(captions: Sequence[str], vocab_size: int):
    """Train a byte-level BPE on the captions; returns a ``PreTrainedTokenizerFast``.

    No prefix space is added, so a caption's first word has no 'Ġ', exactly as
    :meth:`texplain.models.lm.FrozenLM.tokenize_captions` tokenizes captions.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(captions, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=EOS_TOKEN
    )


def pretrain_caption_lm(
    captions: Sequence[str] | Sequence[Sequence[str]],
    out_dir: str | os.PathLike,
    config: CaptionLMConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train the tokenizer and a GPT-2-style LM on captions; save an HF folder.

    ``captions`` are strings, or groups of strings that describe one image
    each (e.g. Flickr8k's five per photo); only grouped captions are joined
    into longer training texts (see ``CaptionLMConfig.join_next``). The folder
    holds ``model.safetensors`` and ``config.json``, the tokenizer
    files, and :data:`METADATA_FILE` with the config and final train/dev
    losses. It is written to a temporary folder and swapped into place, so a
    reader never sees half a model; an existing folder is replaced only if it
    is itself a caption LM folder. Returns ``out_dir``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = config or CaptionLMConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / METADATA_FILE).is_file():
        raise TexplainError(f"caption LM: {out_dir} exists and is not a caption LM folder; not overwriting it")
    groups = [[c.strip() for c in ([g] if isinstance(g, str) else g) if c and c.strip()] for g in captions]
    groups = [g for g in groups if g]
    if sum(map(len, groups)) < 2:
        raise TexplainError(f"caption LM: need at least 2 non-empty captions, got {sum(map(len, groups))}")
    started = time.perf_counter()
    train_groups, dev_captions = _split(groups, config)
    tokenizer = train_caption_tokenizer([c for g in train_groups for c in g], config.vocab_size)
    eos = tokenizer.eos_token_id
    train_rows = _encode(tokenizer, _join_pairs(train_groups, config), config.max_tokens, eos)
    dev_rows = _encode(tokenizer, dev_captions, config.max_tokens, eos)
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    )
    log.info(
        "caption LM: %d parameters, vocabulary %d, %d train / %d dev captions",
        sum(p.numel() for p in model.parameters()), len(tokenizer), len(train_rows), len(dev_rows),
    )
    train_loss = _train(model, train_rows, config, eos, progress)
    dev_loss = _evaluate(model, dev_rows, config, eos) if dev_rows else None
    seconds = time.perf_counter() - started
    log.info("caption LM: train loss %.3f, dev loss %s, %.0f s", train_loss, dev_loss, seconds)
    metadata = {
        "config": asdict(config),
        "train_loss": train_loss,
        "dev_loss": dev_loss,
        "train_captions": len(train_rows),
        "dev_captions": len(dev_rows),
        "seconds": round(seconds, 1),
    }
    _save(model, tokenizer, metadata, out_dir)
    return out_dir


def _split(groups: list[list[str]], config: CaptionLMConfig) -> tuple[list[list[str]], list[str]]:
    """Hold out ``dev_fraction`` of the captions (at least one when the fraction is positive).

    Returns the training captions still in their groups (some may be emptied)
    and the held-out captions as a flat list.
    """
    total = sum(map(len, groups))
    order = list(range(total))
    random.Random(config.seed).shuffle(order)
    n_dev = max(1, round(config.dev_fraction * total)) if config.dev_fraction > 0 else 0
    dev = set(order[:n_dev])
    train, held_out, index = [], [], 0
    for group in groups:
        train.append([c for i, c in enumerate(group, index) if i not in dev])
        held_out.extend(c for i, c in enumerate(group, index) if i in dev)
        index += len(group)
    return train, held_out


def _join_pairs(groups: list[list[str]], config: CaptionLMConfig) -> list[str]:
    """Training texts: each caption, followed by the next of its group in ``join_next`` of the cases."""
    rng = random.Random(config.seed + 1)
    texts = []
    for group in groups:
        for i, caption in enumerate(group):
            joined = i + 1 < len(group) and rng.random() < config.join_next
            texts.append(f"{caption} {group[i + 1]}" if joined else caption)
    return texts


def _encode(tokenizer, captions: list[str], max_tokens: int, eos: int) -> list[list[int]]:
    """Captions → ``[eos] caption [eos]`` id lists, the caption cut to ``max_tokens - 1`` tokens."""
    if not captions:
        return []
    ids = tokenizer(captions, add_special_tokens=False)["input_ids"]
    return [[eos, *row[: max_tokens - 1], eos] for row in ids]


def _batches(rows: list[list[int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of row indices, each of similar lengths to keep padding small.

    Rows are shuffled, sorted by length within windows of 50 batches, cut
    into batches, and the batches shuffled again.
    """
    order = list(range(len(rows)))
    rng.shuffle(order)
    window = 50 * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(rows[i]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _collate(rows: list[list[int]], eos: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids (B, L) and labels (B, L) with -100 on padding.

    Padding sits after each caption's final EOS, so causal attention never
    lets a real token see it and no attention mask is needed.
    """
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), eos, dtype=torch.long)  # (B, L)
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)  # (B, L)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = ids[i, : len(row)]
    return ids, labels


def _random_positions(ids: Tensor, n_positions: int, generator: torch.Generator) -> Tensor:
    """Position ids (B, L): each row starts at a random offset that still fits."""
    batch, length = ids.shape
    offsets = torch.randint(0, n_positions - length + 1, (batch, 1), generator=generator)  # (B, 1)
    return offsets + torch.arange(length)  # (B, L)


def _schedule(step: int, total: int, config: CaptionLMConfig) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    warmup = max(1, int(config.warmup_fraction * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(model: torch.nn.Module, config: CaptionLMConfig) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (nanoGPT's grouping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _train(model: torch.nn.Module, rows: list[list[int]], config: CaptionLMConfig, eos: int, progress: bool) -> float:
    """Train in place; returns the mean train loss over the last tenth of the steps."""
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, total, config))
    tail: deque[float] = deque(maxlen=max(1, total // 10))
    step = 0
    model.train()
    with tqdm(total=total, desc="pretraining caption LM", unit="step", disable=not progress) as bar:
        for epoch in range(config.epochs):
            for batch in _batches(rows, config.batch_size, rng):
                ids, labels = _collate([rows[i] for i in batch], eos)
                positions = _random_positions(ids, config.n_positions, generator)
                loss = model(input_ids=ids, position_ids=positions, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                value = loss.detach().item()
                tail.append(value)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
                if step % 100 == 0 or step == total:
                    log.info("caption LM: step %d/%d, loss %.3f", step, total, value)
    model.eval()
    return sum(tail) / len(tail)


def _evaluate(model: torch.nn.Module, rows: list[list[int]], config: CaptionLMConfig, eos: int) -> float:
    """Mean cross-entropy per predicted token on held-out rows, positions from 0."""
    total_loss, total_tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), config.batch_size):
            ids, labels = _collate(rows[start : start + config.batch_size], eos)
            tokens = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total_loss += float(model(input_ids=ids, labels=labels).loss) * tokens
            total_tokens += tokens
    return total_loss / total_tokens


def _save(model: torch.nn.Module, tokenizer, metadata: dict, out_dir: Path) -> None:
    """Write the folder beside ``out_dir`` and swap it into place."""
    with building_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
