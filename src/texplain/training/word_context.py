"""The context a prefix-ready caption LM learns to read: K slots of content words before each caption.

A frozen LM that never saw anything before its captions ignores a prefix, or
is thrown off by it: prompting small frozen LMs is known to fail unless they
were pretrained in a format that uses their context. The caption LM is
therefore pretrained, on text alone, with a context it can use: K *slots*
before the start token, each the input embedding of one content word of the
image's *other* captions (what any description of the image would mention,
never the words of the caption being predicted). So the LM learns to write
about what precedes it, and the translator's K prefix embeddings have a
format to aim at: words, in the LM's own input space.

Slot kinds, drawn per caption when pretraining:

* a word slot: the mean of the input embeddings of the word's tokens (with a
  leading space, as inside a sentence);
* a mixed slot: a convex mix of two or three of the image's words, so that a
  slot may say "dog or puppy" as a translator unsure between them will;
* a null slot: the end-of-sentence embedding, "nothing here". A context of
  K null slots is the *empty context*: the LM alone.

A few word slots are replaced by a random word of the vocabulary, so the LM
learns to follow what the slots agree on rather than any single slot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor

from texplain.text.config import WordConfig
from texplain.text.words import sentence_words
from texplain.training.config import ContextRecipe

NULL = -1
"""Word index of the null slot (the end-of-sentence embedding)."""

MIX = 3
"""Most words one slot mixes."""


class WordTable:
    """Content words (lemmas) and their token ids: word index → slot embedding.

    ``tokens`` is (W, T) padded with -1; :meth:`embeddings` turns it into one
    embedding per word with the LM's current input embeddings, so the table
    follows the embeddings as they learn.
    """

    def __init__(self, words: Sequence[str], tokenizer):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        rows = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id] for w in self.words]
        width = max((len(r) for r in rows), default=1)
        self.tokens = torch.full((len(rows), width), -1, dtype=torch.long)  # (W, T)
        for i, row in enumerate(rows):
            self.tokens[i, : len(row)] = torch.tensor(row)
        self.eos = int(tokenizer.eos_token_id)

    def __len__(self) -> int:
        return len(self.words)

    def embeddings(self, embedding: torch.nn.Embedding) -> Tensor:
        """(W + 1, d): each word's mean token embedding, then the null slot's (end of sentence) last."""
        tokens = self.tokens.to(embedding.weight.device)
        valid = (tokens >= 0).unsqueeze(-1)  # (W, T, 1)
        vectors = (embedding(tokens.clamp(min=0)) * valid).sum(1) / valid.sum(1)  # (W, d)
        null = embedding(torch.tensor([self.eos], device=tokens.device))  # (1, d)
        return torch.cat([vectors, null])

    def slots(self, embedding: torch.nn.Embedding, words: Tensor, weights: Tensor) -> Tensor:
        """Slot embeddings (B, K, d) from word indices (B, K, M) (NULL for none) and mixing weights (B, K, M)."""
        table = self.embeddings(embedding)  # (W + 1, d)
        index = torch.where(words == NULL, len(self), words)  # (B, K, M)
        # A lookup, not table[index]: the backward of advanced indexing accumulates in an order that
        # changes from run to run on a multi-threaded CPU, so a seeded caption LM would not repeat.
        rows = torch.nn.functional.embedding(index, table)  # (B, K, M, d)
        return (rows * weights.unsqueeze(-1).to(table.dtype)).sum(2)  # (B, K, d)


def caption_words(caption: str, config: WordConfig | None = None) -> list[str]:
    """The distinct content words of a caption, in order (the words a context slot holds)."""
    return list(dict.fromkeys(sentence_words(caption, config or WordConfig())))


def sibling_words(group: Sequence[str], config: WordConfig | None = None) -> list[list[str]]:
    """For each caption of one image, the content words of the image's other captions (its own if it is alone)."""
    own = [caption_words(c, config) for c in group]
    if len(group) == 1:
        return own
    return [list(dict.fromkeys(w for j, ws in enumerate(own) if j != i for w in ws)) for i in range(len(group))]


def draw_context(
    words: Sequence[int], recipe: ContextRecipe, vocabulary: int, rng: random.Random
) -> tuple[list[list[int]], list[list[float]]]:
    """One caption's context: per slot, up to :data:`MIX` word indices and their weights.

    ``words`` are the indices of the image's words that the context may use;
    the order is shuffled, missing slots are null.
    """
    null = ([NULL] + [NULL] * (MIX - 1), [1.0] + [0.0] * (MIX - 1))
    if not words or rng.random() < recipe.empty:
        return [list(null[0]) for _ in range(recipe.slots)], [list(null[1]) for _ in range(recipe.slots)]
    pool = list(words)
    rng.shuffle(pool)
    indices, weights = [], []
    for k in range(recipe.slots):
        if k >= len(pool) or rng.random() < recipe.drop:
            chosen, share = list(null[0]), list(null[1])
        elif rng.random() < recipe.noise:
            chosen, share = [rng.randrange(vocabulary)] + [NULL] * (MIX - 1), list(null[1])
        elif len(pool) > 1 and rng.random() < recipe.mix:
            others = rng.sample([w for w in pool if w != pool[k]], min(rng.randint(1, MIX - 1), len(pool) - 1))
            raw = [rng.gammavariate(1.0, 1.0) for _ in range(1 + len(others))]
            chosen = [pool[k], *others] + [NULL] * (MIX - 1 - len(others))
            share = [r / sum(raw) for r in raw] + [0.0] * (MIX - 1 - len(others))
        else:
            chosen, share = [pool[k]] + [NULL] * (MIX - 1), list(null[1])
        indices.append(chosen)
        weights.append(share)
    return indices, weights


def word_context(words: Sequence[int], slots: int) -> tuple[list[list[int]], list[list[float]]]:
    """A plain context: the first ``slots`` words, one per slot, the rest null (for measuring, not training)."""
    indices, weights = [], []
    for k in range(slots):
        word = words[k] if k < len(words) else NULL
        indices.append([word] + [NULL] * (MIX - 1))
        weights.append([1.0] + [0.0] * (MIX - 1))
    return indices, weights
