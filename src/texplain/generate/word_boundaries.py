"""Where words begin, read from a tokenizer's vocabulary, so sentences are counted in words without decoding.

Sentence-length rules are counted in words, not tokens: per-token tables
(whitespace before, whitespace after, holds a letter or digit) and one flag
per sentence tell where a word begins (:func:`word_step`). The tables come
from the vocabulary's scheme: byte-level BPE ('Ġ'), SentencePiece ('▁', with
byte-fallback tokens), or WordPiece and word-level vocabularies.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import torch
from torch import Tensor

WORD_MARKERS = ("\u0120", "\u2581")
"""Word-start markers of byte-level BPE (GPT-2's 'Ġ') and SentencePiece ('▁')."""

WORDPIECE_CONTINUATION = "##"
"""WordPiece's prefix for a token that continues the previous word."""

SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
"""SentencePiece's byte-fallback tokens, e.g. '<0x0A>' for a newline."""


def word_start_mask(tokenizer) -> Tensor:
    """Which token ids begin a new word wherever they stand: BoolTensor (V,), V = len(tokenizer).

    Words are what ``str.split`` finds in the decoded text, counted only if
    they hold a letter or digit (punctuation alone is no word). A token begins
    one when its text starts with whitespace and holds a letter or digit:
    'Ġdog' in byte-level BPE, '▁dog' in SentencePiece, any WordPiece or
    word-level token but a '##' continuation. Special tokens never do. Tokens
    without leading whitespace can begin a word too, after a whitespace token
    such as a newline or at the start of a sentence; the sampler follows that
    context (:func:`count_token_words`).
    """
    space_before, _, has_alnum = word_tables(tokenizer)
    return space_before & has_alnum


def count_token_words(tokenizer, ids: Sequence[int]) -> int:
    """Words in a token sequence, counted as the sampler counts them.

    Words are whitespace-separated chunks of the decoded text that hold a
    letter or digit; ids outside the tokenizer add no text.
    """
    tables = word_tables(tokenizer)
    fresh = torch.ones(1, dtype=torch.bool)
    words = 0
    for token in ids:
        if token < tables[0].shape[0]:
            new_word, fresh = word_step(torch.tensor([token]), fresh, tables)
            words += int(new_word)
    return words


def word_step(token: Tensor, fresh: Tensor, tables: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Whether tokens (B,) begin a word, and each row's flag after them, from the flag (B,) before.

    ``fresh`` means "no letter or digit since the last whitespace" (true at
    a sentence's start); a token with leading whitespace makes it true, one
    with a letter or digit begins a word if it is true, and whitespace at the
    token's end makes it true again.
    """
    space_before, space_after, has_alnum = tables
    fresh = fresh | space_before[token]  # (B,)
    new_word = fresh & has_alnum[token]  # (B,)
    return new_word, space_after[token] | (fresh & ~has_alnum[token])


@functools.lru_cache(maxsize=8)
def word_tables(tokenizer) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token tables (V,) for :func:`word_step`: leading whitespace, trailing whitespace, a letter or digit.

    Kept per tokenizer: reading a large vocabulary token by token takes a
    noticeable fraction of a second, and every image's sampling needs it.
    """
    texts = _token_texts(tokenizer)
    space_before = torch.tensor([t[:1].isspace() for t in texts], dtype=torch.bool)
    space_after = torch.tensor([t[-1:].isspace() for t in texts], dtype=torch.bool)
    has_alnum = torch.tensor([any(c.isalnum() for c in t) for t in texts], dtype=torch.bool)
    return space_before, space_after, has_alnum


def _token_texts(tokenizer) -> list[str]:
    """The text each token id adds to a decoded sentence, leading whitespace included.

    The scheme is read from the vocabulary: byte-level BPE ('Ġ' marks a
    space; the characters stand for bytes), SentencePiece ('▁' marks a space;
    '<0x0A>'-style byte tokens), else WordPiece or word-level (a space before
    every token but a '##' continuation). Special tokens give ''.
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    counts = {m: sum(1 for t in tokens if t and t.startswith(m)) for m in WORD_MARKERS}
    marker = max(counts, key=counts.get) if max(counts.values()) > 0 else None
    special = set(tokenizer.all_special_ids)
    texts = []
    for i, token in enumerate(tokens):
        if not token or i in special:
            texts.append("")
        elif marker == WORD_MARKERS[0]:
            texts.append(_byte_level_text(token))
        elif marker == WORD_MARKERS[1]:
            texts.append(_sentencepiece_text(token))
        elif token.startswith(WORDPIECE_CONTINUATION):
            texts.append(token[len(WORDPIECE_CONTINUATION) :])
        else:
            texts.append(" " + token)
    return texts


def _byte_level_text(token: str) -> str:
    """Text of a byte-level BPE token; incomplete UTF-8 becomes U+FFFD (no letter)."""
    decoder = _byte_decoder()
    if not all(c in decoder for c in token):
        return token  # an added token, stored as plain text
    return bytes(decoder[c] for c in token).decode("utf-8", errors="replace")


def _sentencepiece_text(token: str) -> str:
    """Text of a SentencePiece token; a byte token of incomplete UTF-8 becomes U+FFFD."""
    byte = SENTENCEPIECE_BYTE.fullmatch(token)
    if byte is None:
        return token.replace(WORD_MARKERS[1], " ")
    value = int(byte.group(1), 16)
    return chr(value) if value < 128 else "\ufffd"


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character → byte table, inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(others)})
    return table


@functools.lru_cache(maxsize=8)
def padded_word_tables(tokenizer, vocab: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`word_tables` on ``device``, cut or padded with False to the logits' width V."""
    padded = []
    for table in word_tables(tokenizer):
        row = torch.zeros(vocab, dtype=torch.bool)
        row[: min(vocab, table.shape[0])] = table[:vocab]
        padded.append(row.to(device))
    return tuple(padded)
