"""Nucleus sampling of many sentences from one translated prefix.

TExplain explains one image by the words that dominate many sentences (the
paper: N = 1000, nucleus p = 0.95, 20-30 words) that a frozen LM writes after
the prefix the translator made from the image's features. All N sentences
share the same K prefix positions, so the prefix goes through the LM once, with
batch 1; its keys and values are copied into each decoding batch once, and the
batch then decodes token by token from that shared cache.

The cache of a decoding batch is one preallocated buffer per layer of shape
(B, H, K + capacity, head_dim): every step writes the new keys and values in
place and attention reads a view of the filled part, so a step costs O(B)
memory traffic rather than re-concatenating the whole cache as
``DynamicCache`` does. Rows whose sentence has ended are dropped from the
batch (and from the cache) once they are a noticeable fraction of it, so short
sentences stop costing compute soon after they end.

Sentence-length rules are counted in words, not tokens, through a boolean
"starts a new word" table over the vocabulary (:func:`word_start_mask`):
end-of-sentence is forbidden until ``min_words`` words are written, and a
sentence is cut where its ``max_words + 1``-th word would begin.

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
from transformers.cache_utils import Cache, CacheLayerMixin

from texplain.errors import TexplainError
from texplain.lm import FrozenLM

log = logging.getLogger(__name__)

WORD_MARKERS = ("\u0120", "\u2581")
"""Word-start markers of byte-level BPE (GPT-2's 'Ġ') and SentencePiece ('▁')."""

WORDPIECE_CONTINUATION = "##"
"""WordPiece's prefix for a token that continues the previous word."""

COMPACT_FRACTION = 0.125
"""Finished rows are dropped from a batch once they are this fraction of it.

Dropping copies the live rows' cache once; keeping a finished row costs one
row of forward pass per step. Finished rows usually stay finished for many
steps, so dropping at one eighth is cheaper than either extreme.
"""

CACHE_CHUNK = 32
"""Token positions a batch's cache buffer grows by when it is full."""


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
            many words (the paper's sentences have 20-30 words).
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
    min_words: int = 20
    max_words: int = 30
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


def nucleus_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most probable tokens whose mass reaches ``top_p``.

    logits: (..., V). Returns logits of the same shape with every token outside
    the nucleus set to -inf. A token is in the nucleus when the probability of
    the tokens ranked above it is still below ``top_p``; the most probable token
    is always kept. Equal probabilities are ranked by token id (lower first),
    so ties are broken the same way every time. ``top_p = 1`` keeps everything.
    """
    if top_p >= 1.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)  # (..., V)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (..., V)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # (..., V)
    keep_sorted = mass_before < top_p  # (..., V)
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)  # (..., V) in token order
    return logits.masked_fill(~keep, float("-inf"))


def word_start_mask(tokenizer) -> Tensor:
    """Which token ids begin a new word: BoolTensor (V,) with V = len(tokenizer).

    The scheme is read from the vocabulary: byte-level BPE marks a word start
    with 'Ġ', SentencePiece with '▁'; otherwise (WordPiece, word-level) every
    token starts a word except WordPiece's '##' continuations. A word start
    must also begin with a letter or digit, so punctuation is not a word, and
    special tokens never are. The first token of a sentence always starts its
    first word (byte-level BPE writes it without a marker); the sampler adds
    that rule itself.
    """
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    counts = {m: sum(1 for t in tokens if t and t.startswith(m)) for m in WORD_MARKERS}
    marker = max(counts, key=counts.get) if max(counts.values()) > 0 else None
    special = set(tokenizer.all_special_ids)
    starts = torch.zeros(size, dtype=torch.bool)
    for i, token in enumerate(tokens):
        if not token or i in special:
            continue
        if marker is not None:
            starts[i] = token.startswith(marker) and token[len(marker) : len(marker) + 1].isalnum()
        else:
            starts[i] = not token.startswith(WORDPIECE_CONTINUATION) and token[:1].isalnum()
    return starts


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
    sentence's tokens without its end-of-sentence token. With ``generator``
    None a generator seeded with ``config.seed`` is made on the LM's device, so
    one seed always gives the same sentences on the same device.
    """
    config = config or SamplingConfig()
    if generator is None:
        generator = torch.Generator(device=lm.device).manual_seed(config.seed)
    prefix = _check_prefix(lm, prefix)
    budget = _token_budget(lm, config, prefix.shape[0])
    with torch.inference_mode():
        keys, values, logits = _encode_prefix(lm, prefix)
        starts = _padded_word_starts(lm, logits.shape[-1])
        sentences: list[list[int]] = []
        with tqdm(total=config.num_samples, desc="sampling", unit="sentence", disable=not progress) as bar:
            for first in range(0, config.num_samples, config.batch_size):
                batch = min(config.batch_size, config.num_samples - first)
                cache = Cache(layers=[_SharedPrefixLayer(k, v, batch) for k, v in zip(keys, values)])
                sentences.extend(_decode_batch(lm, cache, logits, starts, config, budget, generator))
                bar.update(batch)
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


def _encode_prefix(lm: FrozenLM, prefix: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Run the prefix once (batch 1): per-layer keys and values (1, H, K, hd) and next-token logits (1, V)."""
    out = lm.model(inputs_embeds=prefix[None], use_cache=True)
    keys, values = [], []
    for layer in out.cache.layers:
        if getattr(layer, "keys", None) is None:
            raise TexplainError(f"sampling: language model {lm.spec} has layers without a key/value cache")
        keys.append(layer.keys)  # (1, H, K, hd)
        values.append(layer.values)  # (1, H, K, hd)
    return keys, values, out.logits[:, -1].float()  # (1, V)


def _padded_word_starts(lm: FrozenLM, vocab: int) -> Tensor:
    """Word-start table (V,) on the LM's device, padded with False to the logits' width."""
    starts = word_start_mask(lm.tokenizer)[:vocab]
    padded = torch.zeros(vocab, dtype=torch.bool)
    padded[: starts.shape[0]] = starts
    return padded.to(lm.device)


def _next_token_probs(logits: Tensor, words: Tensor, eos: int, config: SamplingConfig) -> Tensor:
    """Sampling distribution (B, V) from raw logits (B, V) and words written so far (B,)."""
    logits = logits / config.temperature  # (B, V)
    too_short = words < config.min_words  # (B,)
    logits[:, eos] = torch.where(too_short, float("-inf"), logits[:, eos])
    return torch.softmax(nucleus_filter(logits, config.top_p), dim=-1)  # (B, V)


def _decode_batch(
    lm: FrozenLM,
    cache: Cache,
    prefix_logits: Tensor,
    starts: Tensor,
    config: SamplingConfig,
    budget: int,
    generator: torch.Generator,
) -> list[list[int]]:
    """Decode one batch of sentences from a cache that holds only the prefix.

    Rows of the batch are sentences; ``sample`` maps each row to its sentence
    and ``alive`` marks rows still writing. Finished rows keep feeding a filler
    token (their outputs are ignored) until enough of them have piled up to be
    dropped from the batch and the cache.
    """
    device, eos = lm.device, lm.eos_token_id
    filler = _filler_token(lm)
    batch = cache.layers[0].batch_size
    sample = torch.arange(batch, device=device)  # (B,) sentence of each row
    alive = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
    words = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    tokens = torch.full((batch, budget), eos, dtype=torch.long, device=device)  # (N_batch, budget)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (N_batch,)
    logits = prefix_logits.expand(batch, -1)  # (B, V)
    for step in range(budget):
        probs = _next_token_probs(logits, words, eos, config)  # (B, V)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        new_word = starts[token] | (step == 0)  # (B,)
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
            sample, alive, words, token = sample[rows], alive[rows], words[rows], token[rows]
        token = torch.where(alive, token, filler)  # (B,)
        logits = lm.model(input_ids=token[:, None], cache=cache, use_cache=True).logits[:, -1].float()  # (B, V)
    return [row[:n].tolist() for row, n in zip(tokens, lengths.tolist())]


def _filler_token(lm: FrozenLM) -> int:
    """A token id that finished rows feed: not the padding id, which makes some models warn about masks."""
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    return 1 if pad == 0 else 0


class _SharedPrefixLayer(CacheLayerMixin):
    """One attention layer's cache for a decoding batch, seeded with the shared prefix.

    Keys and values live in a buffer (B, H, capacity, hd) whose first K
    positions are the prefix, broadcast from (1, H, K, hd) once when the batch
    starts. :meth:`update` writes new positions in place and returns views of
    the filled part, so no step copies the cache. The buffer grows by
    :data:`CACHE_CHUNK` positions when full.
    """

    is_sliding = False

    def __init__(self, prefix_keys: Tensor, prefix_values: Tensor, batch: int):
        super().__init__()
        _, heads, length, head_dim = prefix_keys.shape
        capacity = length + CACHE_CHUNK
        self._keys = prefix_keys.new_empty((batch, heads, capacity, head_dim))  # (B, H, C, hd)
        self._values = prefix_values.new_empty((batch, prefix_values.shape[1], capacity, prefix_values.shape[3]))
        self._keys[:, :, :length] = prefix_keys
        self._values[:, :, :length] = prefix_values
        self.length = length
        self.device = prefix_keys.device
        self.is_initialized = True
        self._expose()

    @property
    def batch_size(self) -> int:
        return self._keys.shape[0]

    def _expose(self) -> None:
        """Point ``keys``/``values`` at the filled part (B, H, length, hd), as other cache layers do."""
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def _grow(self, needed: int) -> None:
        """Reallocate the buffers with room for at least ``needed`` positions."""
        capacity = max(needed, self._keys.shape[2] + CACHE_CHUNK)
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], capacity, old.shape[3]))
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        raise TexplainError("sampling: a shared-prefix cache layer is created already filled")

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append new keys/values (B, H, q, hd) in place; return all (B, H, length, hd)."""
        end = self.length + key_states.shape[2]
        if end > self._keys.shape[2]:
            self._grow(end)
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep only the rows ``indices`` (B',), copying just their filled positions."""
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((indices.shape[0], *old.shape[1:]))
            new[:, :, : self.length] = old[indices, :, : self.length]
            setattr(self, name, new)
        self._expose()
