"""Nucleus sampling of many sentences from one translated prefix.

TExplain explains one image by the words that dominate many sentences (the
paper: N = 1000, nucleus p = 0.95, 20-30 words) that a frozen LM writes after
the prefix the translator made from the image's features. All N sentences
share the same K prefix positions, so the prefix goes through the LM once
and batches decode from copies of its cache (:mod:`.prefix_cache`); each
token is an exact nucleus draw (:mod:`.nucleus`); lengths are counted in
words (:mod:`.word_boundaries`). End-of-sentence is forbidden until
``min_words`` words are written, and a sentence is cut where its
``max_words + 1``-th word would begin. Rows whose sentence has ended are
dropped from the batch (and from the cache) once they are a noticeable
fraction of it, so short sentences stop costing compute soon after they end.

This path serves any decoder whose attention layers use the ``transformers``
cache API: GPT-2, Llama-architecture models (SmolLM2) and BERT loaded as a
decoder (``is_decoder=True``; its self-attention uses the same cache).
Sliding-window limits are not applied: sentences are far shorter than any
window. Models without key/value caches (state-space layers) are refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers.cache_utils import Cache

from texplain.errors import TexplainError
from texplain.generate.nucleus import sample_nucleus
from texplain.generate.prefix_cache import (
    SharedPrefixLayer,
    cache_argument,
    encode_prefix,
)
from texplain.generate.word_boundaries import padded_word_tables, word_step
from texplain.models.lm import FrozenLM

log = logging.getLogger(__name__)

COMPACT_FRACTION = 0.125
"""Finished rows are dropped from a batch once they are this fraction of it.

Dropping copies the live rows' cache once; keeping a finished row costs one
row of forward pass per step. Finished rows usually stay finished for many
steps, so dropping at one eighth is cheaper than either extreme.
"""


@dataclass
class SamplingConfig:
    """How many sentences to sample from one prefix, and how.

    Attributes:
        num_samples: Sentences per prefix (the paper's N = 1000).
        top_p: Nucleus mass in (0, 1]: each token is drawn from the smallest
            set of most probable tokens whose probability reaches ``top_p``
            (the paper's 0.95); 1 samples from the full distribution.
        temperature: Logits are divided by this (> 0) before the nucleus is
            taken; 1 leaves the LM's distribution as it is.
        min_words: End-of-sentence is forbidden until a sentence has this
            many words. The paper's sentences have 20-30 words; the default
            is a caption's length (5-20), since a caption LM forced past its
            caption's end writes fragments of its prior.
        max_words: A sentence is cut where its ``max_words + 1``-th word would
            begin, so it never has more than ``max_words`` words.
        batch_size: Sentences decoded together; bounds memory, which grows as
            batch_size x sentence length x the LM's cache width.
        seed: Seed of the generator made when the caller gives none, so that
            the same seed gives the same sentences.
        max_tokens: Hard limit on tokens per sentence, against a model that
            keeps writing word pieces; ``None`` means three per word
            (``3 * max_words``). It is also kept within the LM's positions.
    """

    num_samples: int = 1000
    top_p: float = 0.95
    temperature: float = 1.0
    min_words: int = 5
    max_words: int = 20
    batch_size: int = 250
    seed: int = 0
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise TexplainError(f"sampling: num_samples must be at least 1, got {self.num_samples}")
        if not 0.0 < self.top_p <= 1.0:
            raise TexplainError(f"sampling: top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0.0:
            raise TexplainError(f"sampling: temperature must be positive, got {self.temperature}")
        if self.min_words < 0:
            raise TexplainError(f"sampling: min_words must be at least 0, got {self.min_words}")
        if self.max_words < 1:
            raise TexplainError(f"sampling: max_words must be at least 1, got {self.max_words}")
        if self.min_words > self.max_words:
            raise TexplainError(f"sampling: min_words ({self.min_words}) is more than max_words ({self.max_words})")
        if self.batch_size < 1:
            raise TexplainError(f"sampling: batch_size must be at least 1, got {self.batch_size}")
        if self.max_tokens is not None and self.max_tokens < self.max_words:
            raise TexplainError(f"sampling: max_tokens ({self.max_tokens}) is less than max_words ({self.max_words})")

    @property
    def token_budget(self) -> int:
        """Most tokens one sentence may have (before the LM's position limit)."""
        return self.max_tokens if self.max_tokens is not None else 3 * self.max_words


def sample_sentences(
    lm: FrozenLM,
    prefix: Tensor,
    config: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[str]:
    """Nucleus-sample ``config.num_samples`` sentences after one prefix (K, d).

    Sentences are decoded with special tokens skipped and outer whitespace
    stripped. See :func:`sample_token_ids` for the rules and the seeding.
    """
    config = config or SamplingConfig()
    ids = sample_token_ids(lm, prefix, config, generator, progress)
    return [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def sample_token_ids(
    lm: FrozenLM,
    prefix: Tensor,
    config: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """Sample ``config.num_samples`` token-id sentences after one prefix (K, d).

    The prefix runs through the LM once; batches of ``config.batch_size``
    sentences then decode from copies of its cache. Each returned list holds a
    sentence's tokens without its end-of-sentence token. A given ``generator``
    must live on the LM's device; with None, one seeded with ``config.seed`` is
    made there, so one seed always gives the same sentences on one device.
    """
    config = config or SamplingConfig()
    if generator is None:
        generator = torch.Generator(device=lm.device).manual_seed(config.seed)
    prefix = _check_prefix(lm, prefix)
    budget = _token_budget(lm, config, prefix.shape[0])
    with torch.inference_mode():
        keys, values, logits = encode_prefix(lm, prefix)
        tables = padded_word_tables(lm.tokenizer, logits.shape[-1], lm.device)
        sentences: list[list[int]] = []
        with tqdm(total=config.num_samples, desc="sampling", unit="sentence", disable=not progress) as bar:
            for first in range(0, config.num_samples, config.batch_size):
                batch = min(config.batch_size, config.num_samples - first)
                cache = Cache(layers=[SharedPrefixLayer(k, v, batch) for k, v in zip(keys, values)])
                sentences.extend(_decode_batch(lm, cache, logits, tables, config, budget, generator))
                bar.update(batch)
    log.debug("sampled %d sentences, %.1f tokens each", len(sentences), sum(map(len, sentences)) / len(sentences))
    return sentences


def _check_prefix(lm: FrozenLM, prefix: Tensor) -> Tensor:
    """A (K, d) prefix on the LM's device and dtype, or a one-line error."""
    if prefix.dim() != 2 or prefix.shape[0] < 1 or prefix.shape[1] != lm.embed_dim:
        raise TexplainError(f"sampling: prefix must have shape (K, {lm.embed_dim}), got {tuple(prefix.shape)}")
    return prefix.detach().to(device=lm.device, dtype=lm.dtype)


def _token_budget(lm: FrozenLM, config: SamplingConfig, prefix_length: int) -> int:
    """Tokens a sentence may have: the config's budget within the LM's positions."""
    model_config = lm.model.config
    positions = getattr(model_config, "n_positions", None) or getattr(model_config, "max_position_embeddings", None)
    budget = config.token_budget
    if positions is not None:
        budget = min(budget, int(positions) - prefix_length)
    if budget < 1:
        raise TexplainError(f"sampling: a prefix of {prefix_length} positions leaves no room in the LM's {positions} positions")
    return budget


def _next_tokens(logits: Tensor, words: Tensor, eos: int, config: SamplingConfig, generator: torch.Generator) -> Tensor:
    """Next token ids (B,) from raw logits (B, V) and the words written so far (B,).

    Temperature first, then end-of-sentence is forbidden in rows that are
    still short of ``min_words``, then the nucleus draw.
    """
    logits = logits / config.temperature  # (B, V)
    too_short = words < config.min_words  # (B,)
    logits[:, eos] = torch.where(too_short, float("-inf"), logits[:, eos])
    return sample_nucleus(logits, config.top_p, generator)  # (B,)


def _decode_batch(
    lm: FrozenLM,
    cache: Cache,
    prefix_logits: Tensor,
    tables: tuple[Tensor, Tensor, Tensor],
    config: SamplingConfig,
    budget: int,
    generator: torch.Generator,
) -> list[list[int]]:
    """Decode one batch of sentences from a cache that holds only the prefix.

    Rows of the batch are sentences; ``sample`` maps each row to its sentence,
    ``alive`` marks rows still writing, ``words`` counts their words and
    ``fresh`` says that no letter or digit followed their last whitespace
    (see :func:`~texplain.generate.word_boundaries.word_tables`). Finished rows keep feeding a filler
    token (their outputs are ignored) until enough of them have piled up to be
    dropped from the batch and the cache.
    """
    device, eos = lm.device, lm.eos_token_id
    filler, cache_name = _filler_token(lm), cache_argument(lm.model)
    batch = cache.layers[0].batch_size
    sample = torch.arange(batch, device=device)  # (B,) sentence of each row
    alive = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
    words = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    fresh = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
    tokens = torch.full((batch, budget), eos, dtype=torch.long, device=device)  # (B0, budget) by sentence
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B0,) by sentence
    logits = prefix_logits.expand(batch, -1)  # (B, V)
    for step in range(budget):
        token = _next_tokens(logits, words, eos, config, generator)  # (B,)
        new_word, fresh = word_step(token, fresh, tables)  # (B,), (B,)
        ends = (token == eos) | (new_word & (words >= config.max_words))  # (B,)
        alive = alive & ~ends
        tokens[sample[alive], step] = token[alive]
        lengths[sample[alive]] += 1
        words = words + (new_word & alive)
        live = int(alive.sum())
        if live == 0 or step + 1 == budget:
            break
        if alive.shape[0] - live >= COMPACT_FRACTION * alive.shape[0]:
            rows = alive.nonzero().squeeze(1)  # (B',)
            cache.batch_select_indices(rows)
            sample, alive, words, fresh, token = sample[rows], alive[rows], words[rows], fresh[rows], token[rows]
        token = torch.where(alive, token, filler)  # (B,)
        step_inputs = {"input_ids": token[:, None], cache_name: cache, "use_cache": True}
        logits = lm.model(**step_inputs).logits[:, -1].float()  # (B, V)
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]


def _filler_token(lm: FrozenLM) -> int:
    """A token id that finished rows feed: not the padding id, which makes some models warn about masks."""
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    return 1 if pad == 0 else 0
