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

Each token is drawn by :func:`sample_nucleus`: exactly from the nucleus
distribution that :func:`nucleus_filter` defines, but without sorting the
vocabulary (an inverse-CDF draw, redrawn when it falls outside the nucleus).
Sorting and ``multinomial``'s (B, V) random numbers were four fifths of the
sampler's time on CPU; the LM's forward pass is now most of it.

Sentence-length rules are counted in words, not tokens, without decoding:
per-token tables (whitespace before, whitespace after, holds a letter or
digit; :func:`word_start_mask`) and one flag per sentence tell where a word
begins. End-of-sentence is forbidden until ``min_words`` words are written,
and a sentence is cut where its ``max_words + 1``-th word would begin.

This path serves any decoder whose attention layers use the ``transformers``
cache API: GPT-2, Llama-architecture models (SmolLM2) and BERT loaded as a
decoder (``is_decoder=True``; its self-attention uses the same cache).
Sliding-window limits are not applied: sentences are far shorter than any
window. Models without key/value caches (state-space layers) are refused.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Sequence
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

SENTENCEPIECE_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
"""SentencePiece's byte-fallback tokens, e.g. '<0x0A>' for a newline."""

COMPACT_FRACTION = 0.125
"""Finished rows are dropped from a batch once they are this fraction of it.

Dropping copies the live rows' cache once; keeping a finished row costs one
row of forward pass per step. Finished rows usually stay finished for many
steps, so dropping at one eighth is cheaper than either extreme.
"""

CDF_BLOCK = 64
"""Tokens per block of the two-level inverse-CDF draw."""

REJECTION_ROUNDS = 8
"""Draws per row before :func:`sample_nucleus` falls back to sorting (see there)."""

CACHE_CHUNK = 32
"""Token positions a batch's cache buffer grows by when it is full."""

_CACHE_ARGUMENT = "cache"
"""Name of the forward argument and output field of the cache in transformers 5.2x."""


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


def sample_nucleus(logits: Tensor, top_p: float, generator: torch.Generator | None = None) -> Tensor:
    """Draw one token per row from the nucleus distribution of logits (B, V); returns ids (B,).

    The result is distributed exactly as ``torch.multinomial`` over
    ``softmax(nucleus_filter(logits, top_p))``, without sorting the vocabulary:
    a token is drawn from the full distribution by inverting its cumulative
    sum with one uniform number per row (:func:`_inverse_cdf_draw`), and kept if
    it lies in the nucleus (the mass of the tokens ranked above it is below
    ``top_p``, ranked as in :func:`nucleus_filter`); rows whose draw falls
    outside draw again. Rejection from p onto a set gives p renormalised on
    that set, and at most 1 - ``top_p`` of the mass is rejected, so a round or
    two suffice. Rows still rejected after :data:`REJECTION_ROUNDS` (possible
    only with a small ``top_p``) are drawn by sorting. The sort and the (B, V)
    random numbers of ``multinomial`` took four fifths of the sampler's time.
    """
    probs = torch.softmax(logits.float(), dim=-1)  # (B, V)
    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)  # (B,)
    pending = torch.arange(probs.shape[0], device=probs.device)  # (b,) rows without an accepted draw
    for _ in range(REJECTION_ROUNDS):
        rows = probs if pending.shape[0] == probs.shape[0] else probs[pending]  # (b, V)
        draw = _inverse_cdf_draw(rows, generator)  # (b,)
        accept = _in_nucleus(rows, draw, top_p)  # (b,)
        tokens[pending[accept]] = draw[accept]
        pending = pending[~accept]
        if pending.shape[0] == 0:
            return tokens
    filtered = torch.softmax(nucleus_filter(logits[pending].float(), top_p), dim=-1)  # (b, V)
    tokens[pending] = torch.multinomial(filtered, 1, generator=generator).squeeze(1)
    return tokens


def _inverse_cdf_draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row of probabilities (b, V), by inverting the CDF in two levels.

    A cumulative sum over all V tokens in float64 costs more than the rest of
    a draw; summing blocks of :data:`CDF_BLOCK` tokens, picking a block by its
    mass, and then a token inside it by its share touches each probability
    once. A token of zero probability is never picked. Returns ids (b,).
    """
    rows, vocab = probs.shape
    padded = torch.nn.functional.pad(probs, (0, -vocab % CDF_BLOCK)) if vocab % CDF_BLOCK else probs
    blocks = padded.view(rows, -1, CDF_BLOCK)  # (b, nb, S)
    block_cdf = blocks.sum(dim=-1).double().cumsum(dim=-1)  # (b, nb)
    u = torch.rand(rows, 1, generator=generator, dtype=torch.float64, device=probs.device) * block_cdf[:, -1:]  # (b, 1)
    block = torch.searchsorted(block_cdf, u, right=True).clamp_(max=blocks.shape[1] - 1)  # (b, 1)
    before = torch.where(block > 0, block_cdf.gather(1, (block - 1).clamp(min=0)), 0.0)  # (b, 1)
    share = ((u - before) / (block_cdf.gather(1, block) - before)).clamp_(0.0, 1.0 - 2.0**-40)  # (b, 1) in [0, 1)
    inside = blocks.gather(1, block[:, :, None].expand(-1, -1, CDF_BLOCK)).squeeze(1).double().cumsum(dim=-1)  # (b, S)
    offset = torch.searchsorted(inside, share * inside[:, -1:], right=True).clamp_(max=CDF_BLOCK - 1)  # (b, 1)
    return (block * CDF_BLOCK + offset).squeeze(1)


def _in_nucleus(probs: Tensor, tokens: Tensor, top_p: float) -> Tensor:
    """Whether each drawn token (b,) lies in its row's nucleus, given probabilities (b, V).

    The mass ranked above a token is that of the strictly more probable
    tokens, from one float pass (clamped differences and their signs; bool
    comparisons are several times slower on CPU), plus the equal tokens with a
    lower id, counted only in rows where they can change the answer (exact
    ties are common among the many near-equal probabilities of a flat row).
    """
    if top_p >= 1.0:
        return torch.ones_like(tokens, dtype=torch.bool)
    p_token = probs.gather(1, tokens[:, None])  # (b, 1)
    diff = probs - p_token  # (b, V)
    sign = torch.sign(diff)  # (b, V): 1 above, 0 equal, -1 below
    above_minus_below = sign.sum(dim=-1)  # (b,)
    above_plus_below = sign.abs_().sum(dim=-1)  # (b,)
    above = (above_minus_below + above_plus_below) / 2  # (b,) count of strictly more probable tokens
    mass_before = diff.clamp_(min=0).sum(dim=-1) + above * p_token[:, 0]  # (b,)
    equal = probs.shape[1] - 1 - above_plus_below  # (b,) other tokens with the same probability
    ties = (equal > 0) & (mass_before < top_p) & (mass_before + equal * p_token[:, 0] >= top_p)  # (b,) ties decide
    if ties.any():
        ids = torch.arange(probs.shape[1], device=probs.device)  # (V,)
        earlier = ((probs[ties] == p_token[ties]) & (ids < tokens[ties, None])).sum(dim=-1)  # (t,)
        mass_before[ties] += earlier * p_token[ties, 0]
    return mass_before < top_p


def word_start_mask(tokenizer) -> Tensor:
    """Which token ids begin a new word wherever they stand: BoolTensor (V,), V = len(tokenizer).

    Words are what ``str.split`` finds in the decoded text, counted only if
    they hold a letter or digit (punctuation alone is no word). A token begins
    one when its text starts with whitespace and holds a letter or digit:
    'Ġdog' in byte-level BPE, '▁dog' in SentencePiece, any WordPiece or
    word-level token but a '##' continuation. Special tokens never do. Tokens
    without leading whitespace can begin a word too, after a whitespace token
    such as a newline or at the start of a sentence; the sampler follows that
    context (:func:`count_words`).
    """
    space_before, _, has_alnum = _word_tables(tokenizer)
    return space_before & has_alnum


def count_words(tokenizer, ids: Sequence[int]) -> int:
    """Words in a token sequence, counted as the sampler counts them.

    Words are whitespace-separated chunks of the decoded text that hold a
    letter or digit; ids outside the tokenizer add no text.
    """
    tables = _word_tables(tokenizer)
    fresh = torch.ones(1, dtype=torch.bool)
    words = 0
    for token in ids:
        if token < tables[0].shape[0]:
            new_word, fresh = _word_step(torch.tensor([token]), fresh, tables)
            words += int(new_word)
    return words


def _word_step(token: Tensor, fresh: Tensor, tables: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
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
def _word_tables(tokenizer) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token tables (V,) for :func:`_word_step`: leading whitespace, trailing whitespace, a letter or digit.

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
        keys, values, logits = _encode_prefix(lm, prefix)
        tables = _padded_word_tables(lm.tokenizer, logits.shape[-1], lm.device)
        sentences: list[list[int]] = []
        with tqdm(total=config.num_samples, desc="sampling", unit="sentence", disable=not progress) as bar:
            for first in range(0, config.num_samples, config.batch_size):
                batch = min(config.batch_size, config.num_samples - first)
                cache = Cache(layers=[_SharedPrefixLayer(k, v, batch) for k, v in zip(keys, values)])
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


def _encode_prefix(lm: FrozenLM, prefix: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Run the prefix once (batch 1): per-layer keys and values (1, H, K, hd) and next-token logits (1, V)."""
    out = lm.model(inputs_embeds=prefix[None], use_cache=True)
    cache = out.cache if _CACHE_ARGUMENT in out else out.past_key_values
    if not getattr(cache, "layers", None):
        raise TexplainError("sampling: this transformers version has no per-layer caches; transformers 5 is needed")
    keys, values = [], []
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None:
            raise TexplainError(f"sampling: language model {lm.spec} has layers without a key/value cache")
        keys.append(layer.keys)  # (1, H, K, hd)
        values.append(layer.values)  # (1, H, K, hd)
    return keys, values, out.logits[:, -1].float()  # (1, V)


@functools.lru_cache(maxsize=8)
def _padded_word_tables(tokenizer, vocab: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_word_tables` on ``device``, cut or padded with False to the logits' width V."""
    padded = []
    for table in _word_tables(tokenizer):
        row = torch.zeros(vocab, dtype=torch.bool)
        row[: min(vocab, table.shape[0])] = table[:vocab]
        padded.append(row.to(device))
    return tuple(padded)


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
    (see :func:`_word_tables`). Finished rows keep feeding a filler
    token (their outputs are ignored) until enough of them have piled up to be
    dropped from the batch and the cache.
    """
    device, eos = lm.device, lm.eos_token_id
    filler, cache_argument = _filler_token(lm), _cache_argument(lm.model)
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
        new_word, fresh = _word_step(token, fresh, tables)  # (B,), (B,)
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
        step_inputs = {"input_ids": token[:, None], cache_argument: cache, "use_cache": True}
        logits = lm.model(**step_inputs).logits[:, -1].float()  # (B, V)
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that takes a cache: ``cache`` from transformers 5.2x, ``past_key_values`` before.

    Passing the other name would not fail: it would vanish into ``**kwargs``
    and the model would silently decode without the prefix.
    """
    parameters = inspect.signature(type(model).forward).parameters
    return _CACHE_ARGUMENT if _CACHE_ARGUMENT in parameters else "past_key_values"


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
