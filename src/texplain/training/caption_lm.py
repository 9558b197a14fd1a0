"""A small GPT-2-style language model pretrained on caption text only, ready to read a prefix.

TExplain needs a frozen LM that writes captions. Large pretrained LMs do, but
sample a few sentences per second on a CPU; a model of a few million
parameters trained on the caption set itself samples hundreds, and knows
exactly the vocabulary the translator will be trained on. This module trains
one from scratch and saves it as an ordinary Hugging Face folder that
:func:`texplain.models.lm.load_lm` loads like any other LM.

It is *prefix-ready*: each training caption follows K context slots holding
content words of the same image's other captions (:mod:`.word_context`), so
the frozen LM has learnt, from text alone, to write about what precedes it.
A training sequence is ``[K slots] <eos> caption <eos>``: the end-of-sentence
token also plays GPT-2's beginning-of-text role. Captions without a context
get K null slots (the end-of-sentence embedding), which is also how the LM
is run alone. The recipe is recorded in the folder's ``config.json``
(``texplain_recipe``) so that a translator is never paired with an LM of
another recipe.

The tokenizer is a byte-level BPE trained on the captions, so that word
starts are 'Ġ' tokens as in GPT-2 (the sampler counts words by them).
Positions are offset at random per sequence, so every position embedding is
trained even though captions are much shorter than ``n_positions``.
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

from texplain.atomic import building_folder
from texplain.errors import TexplainError
from texplain.models.lm import IGNORE_INDEX, RECIPE_KEY
from texplain.progress import tqdm
from texplain.training.batching import length_batches
from texplain.training.config import CaptionLMConfig
from texplain.training.schedule import warmup_cosine
from texplain.training.word_context import WordTable, draw_context, sibling_words, word_context

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
"""The one special token: end of caption, and (GPT-2 style) beginning, null slot and padding too."""

METADATA_FILE = "texplain_lm.json"
"""Written beside the model: the training config and the final losses."""


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


@dataclass
class CaptionRows:
    """Encoded captions, ``[eos] caption [eos]`` each, the word indices their contexts may use, and their image."""

    ids: list[list[int]]
    words: list[list[int]]
    groups: list[int]


def pretrain_caption_lm(
    captions: Sequence[str] | Sequence[Sequence[str]],
    out_dir: str | os.PathLike,
    config: CaptionLMConfig | None = None,
    progress: bool = True,
) -> Path:
    """Train the tokenizer and a prefix-ready GPT-2-style LM on captions; save an HF folder.

    ``captions`` are strings, or groups of strings that describe one image
    each (e.g. Flickr8k's five per photo): a caption's context holds words of
    its group's other captions (its own words when it is alone). The folder
    holds ``model.safetensors`` and ``config.json`` (with the recipe), the
    tokenizer files, and :data:`METADATA_FILE` with the config, the final train
    loss and the three dev losses. It is written to a temporary folder and
    swapped into place; an existing folder is replaced only if it is itself a
    caption LM folder. Returns ``out_dir``.
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
    train_groups, dev_groups = _split(groups, config)
    tokenizer = train_caption_tokenizer([c for g in train_groups for c in g], config.vocab_size)
    table = WordTable(sorted({w for g in groups for ws in sibling_words(g) for w in ws}), tokenizer)
    train_rows = encode_groups(tokenizer, table, train_groups, config.max_tokens)
    dev_rows = encode_groups(tokenizer, table, dev_groups, config.max_tokens)
    torch.manual_seed(config.seed)
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if config.recipe:
        setattr(gpt2, RECIPE_KEY, config.recipe)
    model = GPT2LMHeadModel(gpt2)
    log.info("caption LM: %d parameters, vocabulary %d, %d context words, %d train / %d dev captions",
             sum(p.numel() for p in model.parameters()), len(tokenizer), len(table), len(train_rows.ids), len(dev_rows.ids))
    train_loss = _train(model, table, train_rows, config, progress)
    dev = context_losses(model, table, dev_rows, config.context.slots, config.batch_size, config.seed) if dev_rows.ids else {}
    seconds = time.perf_counter() - started
    log.info("caption LM: train loss %.3f, dev losses %s, %.0f s", train_loss, dev, seconds)
    metadata = {
        "config": asdict(config),
        "recipe": config.recipe,
        "train_loss": train_loss,
        "dev_loss": dev.get("none"),
        "dev_loss_context": dev.get("right"),
        "dev_loss_wrong_context": dev.get("wrong"),
        "train_captions": len(train_rows.ids),
        "dev_captions": len(dev_rows.ids),
        "seconds": round(seconds, 1),
    }
    _save(model, tokenizer, metadata, out_dir)
    return out_dir


def context_losses(
    model: torch.nn.Module, table: WordTable, rows: CaptionRows, slots: int, batch_size: int = 64, seed: int = 0
) -> dict[str, float]:
    """Mean caption loss after three contexts: none (null slots), the right words, and another image's words.

    The right words are the caption's context words in their stored order
    (the first ``slots``); the wrong ones are those of a caption of another
    image, chosen by a seeded shuffle.
    """
    n = len(rows.ids)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    wrong = []
    for i in range(n):
        j = next((order[(i + step) % n] for step in range(n) if rows.groups[order[(i + step) % n]] != rows.groups[i]), i)
        wrong.append(rows.words[j])
    return {
        "none": _evaluate(model, table, rows.ids, [[] for _ in range(n)], slots, batch_size),
        "right": _evaluate(model, table, rows.ids, rows.words, slots, batch_size),
        "wrong": _evaluate(model, table, rows.ids, wrong, slots, batch_size),
    }


def _split(groups: list[list[str]], config: CaptionLMConfig) -> tuple[list[list[str]], list[list[str]]]:
    """Hold out ``dev_fraction`` of the groups (at least one when the fraction is positive and there are two)."""
    order = list(range(len(groups)))
    random.Random(config.seed).shuffle(order)
    n_dev = min(len(groups) - 1, max(1, round(config.dev_fraction * len(groups)))) if config.dev_fraction > 0 else 0
    dev = set(order[:n_dev])
    return [g for i, g in enumerate(groups) if i not in dev], [g for i, g in enumerate(groups) if i in dev]


def encode_groups(tokenizer, table: WordTable, groups: Sequence[Sequence[str]], max_tokens: int) -> CaptionRows:
    """Caption groups → ``[eos] caption [eos]`` id lists (the caption cut to ``max_tokens - 1`` tokens),
    each caption's context words (those of its group's other captions that ``table`` knows) and its group."""
    captions = [c for g in groups for c in g]
    if not captions:
        return CaptionRows([], [], [])
    eos = tokenizer.eos_token_id
    ids = tokenizer(captions, add_special_tokens=False)["input_ids"]
    words = [[table.index[w] for w in ws if w in table.index] for g in groups for ws in sibling_words(g)]
    group_of = [n for n, g in enumerate(groups) for _ in g]
    return CaptionRows([[eos, *row[: max_tokens - 1], eos] for row in ids], words, group_of)


def _collate(rows: list[list[int]], eos: int, slots: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids (B, L) and labels (B, slots + L) with -100 on the context, the start token and padding.

    Padding sits after each caption's final EOS, so causal attention never
    lets a real token see it and no attention mask is needed.
    """
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), eos, dtype=torch.long)  # (B, L)
    labels = torch.full((len(rows), slots + length), IGNORE_INDEX, dtype=torch.long)  # (B, K + L)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, slots + 1 : slots + len(row)] = ids[i, 1 : len(row)]
    return ids, labels


def _inputs(model: torch.nn.Module, table: WordTable, ids: Tensor, contexts: list[tuple[list, list]]) -> Tensor:
    """Input embeddings (B, K + L, d): each row's context slots, then its tokens."""
    embedding = model.get_input_embeddings()
    tokens = embedding(ids)  # (B, L, d)
    if not contexts or not contexts[0][0]:
        return tokens
    words = torch.tensor([c[0] for c in contexts])  # (B, K, M)
    weights = torch.tensor([c[1] for c in contexts])  # (B, K, M)
    return torch.cat([table.slots(embedding, words, weights), tokens], dim=1)  # (B, K + L, d)


def _random_positions(length: int, batch: int, n_positions: int, generator: torch.Generator) -> Tensor:
    """Position ids (B, length): each row starts at a random offset that still fits."""
    offsets = torch.randint(0, n_positions - length + 1, (batch, 1), generator=generator)  # (B, 1)
    return offsets + torch.arange(length)  # (B, length)


def _optimizer(model: torch.nn.Module, config: CaptionLMConfig) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (nanoGPT's grouping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _train(model: torch.nn.Module, table: WordTable, rows: CaptionRows, config: CaptionLMConfig, progress: bool) -> float:
    """Train in place, drawing fresh contexts every epoch; returns the mean train loss over the last tenth of the steps."""
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(rows.ids) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config)
    scheduler = warmup_cosine(optimizer, max(1, int(config.warmup_fraction * total)), total, config.min_lr_ratio)
    tail: deque[float] = deque(maxlen=max(1, total // 10))
    step, slots, eos = 0, config.context.slots, table.eos
    model.train()
    with tqdm(total=total, desc="pretraining caption LM", unit="step", disable=not progress) as bar:
        for epoch in range(config.epochs):
            for batch in length_batches([len(r) for r in rows.ids], config.batch_size, generator):
                ids, labels = _collate([rows.ids[i] for i in batch], eos, slots)
                contexts = [draw_context(rows.words[i], config.context, len(table), rng) for i in batch] if slots else []
                inputs = _inputs(model, table, ids, contexts)  # (B, K + L, d)
                positions = _random_positions(inputs.shape[1], len(batch), config.n_positions, generator)
                loss = model(inputs_embeds=inputs, position_ids=positions, labels=labels).loss
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


def _evaluate(
    model: torch.nn.Module, table: WordTable, ids: list[list[int]], words: list[list[int]], slots: int, batch_size: int
) -> float:
    """Mean cross-entropy per caption token after each row's plain word context (positions from 0)."""
    total_loss, total_tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = slice(start, start + batch_size)
            tokens, labels = _collate(ids[batch], table.eos, slots)
            contexts = [word_context(w, slots) for w in words[batch]] if slots else []
            count = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total_loss += float(model(inputs_embeds=_inputs(model, table, tokens, contexts), labels=labels).loss) * count
            total_tokens += count
    return total_loss / total_tokens


def _save(model: torch.nn.Module, tokenizer, metadata: dict, out_dir: Path) -> None:
    """Write the folder beside ``out_dir`` and swap it into place."""
    with building_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
