"""Nucleus sampling of many sentences from one translated prefix.

TExplain explains one image by the words that dominate many sentences (the
paper: N = 1000, nucleus p = 0.95, 20-30 words) that a frozen LM writes after
the prefix the translator made from the image's features. All N sentences
share the same K prefix positions, so the prefix goes through the LM once
and batches decode from copies of its cache (:mod:`.prefix_cache`); each
token is an exact nucleus draw (:mod:`.nucleus`); lengths are counted in
words (:mod:`.word_boundaries`). End-of-sentence is forbidden until
``min_words`` words are written, and a sentence is cut where its
``max_words + 1``-th word would begin.

Two decoders follow these rules (:mod:`.device_plan` picks one per device).
The eager one (CPUs) is here: rows whose sentence has ended are dropped from
the batch (and from the cache) once they are a noticeable fraction of it, so
short sentences stop costing compute soon after they end. The static one
(GPUs, :mod:`.static_decoder`) keeps one batch of fixed shape busy instead.

This path serves any decoder whose attention layers use the ``transformers``
cache API: GPT-2, Llama-architecture models (SmolLM2) and BERT loaded as a
decoder (``is_decoder=True``; its self-attention uses the same cache).
Sliding-window limits are not applied: sentences are far shorter than any
window. Models without key/value caches (state-space layers) are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers.cache_utils import Cache

from texplain.errors import TexplainError
from texplain.generate.config import SamplingConfig
from texplain.generate.device_plan import DecodePlan, decode_plan
from texplain.generate.nucleus import sample_nucleus
from texplain.generate.prefix_cache import (
    SharedPrefixLayer,
    cache_argument,
    encode_prefix,
)
from texplain.generate.static_decoder import decode_static
from texplain.generate.word_boundaries import padded_word_tables, word_step
from texplain.models.lm import FrozenLM
from texplain.progress import tqdm

log = logging.getLogger(__name__)

COMPACT_FRACTION = 0.125
"""Finished rows are dropped from a batch once they are this fraction of it.

Dropping copies the live rows' cache once; keeping a finished row costs one
row of forward pass per step. Finished rows usually stay finished for many
steps, so dropping at one eighth is cheaper than either extreme.
"""


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

    Sentences are drawn :attr:`~.device_plan.DecodePlan.rows_per_round` at a
    time with :func:`sample_rows`, exactly as when this image shares its
    batches with others. Each returned list holds a sentence's tokens without its
    end-of-sentence token. A given ``generator`` must live on the LM's device;
    with None, one seeded with ``config.seed`` is made there, so one seed
    always gives the same sentences on one device.
    """
    config = config or SamplingConfig()
    generator = generator if generator is not None else new_generator(lm, config)
    plan = sampling_plan(lm, config, prefix.shape[0])
    sentences: list[list[int]] = []
    with tqdm(total=config.num_samples, desc="sampling", unit="sentence", disable=not progress) as bar:
        while len(sentences) < config.num_samples:
            rows = min(plan.rows_per_round, config.num_samples - len(sentences))
            sentences.extend(sample_rows(lm, prefix[None], [rows], [generator], config)[0])
            bar.update(rows)
    log.debug("sampled %d sentences, %.1f tokens each", len(sentences), sum(map(len, sentences)) / len(sentences))
    return sentences


def sampling_plan(lm: FrozenLM, config: SamplingConfig, prefix_length: int) -> DecodePlan:
    """How ``lm`` decodes ``config`` after prefixes of ``prefix_length`` positions (:func:`~.device_plan.decode_plan`)."""
    return decode_plan(lm, config, prefix_length, _token_budget(lm, config, prefix_length))


def new_generator(lm: FrozenLM, config: SamplingConfig) -> torch.Generator:
    """An image's own random generator, on the LM's device, seeded with ``config.seed``."""
    return torch.Generator(device=lm.device).manual_seed(config.seed)


def sample_rows(
    lm: FrozenLM,
    prefixes: Tensor,
    rows: Sequence[int],
    generators: Sequence[torch.Generator],
    config: SamplingConfig,
) -> list[list[list[int]]]:
    """Decode ``rows[i]`` sentences after prefix i of prefixes (n, P, d), in one call; token ids per image.

    The prefixes run through the LM once; each row of the batch starts from
    its image's prefix cache. Every image draws its tokens from its own
    generator, so an image gets exactly the sentences it would get alone,
    whatever shares the batch (up to the floating-point effects of batching
    on the LM's arithmetic). The eager decoder decodes all rows as one batch,
    its images drawing for their live rows in order, step by step; the static
    one (:func:`~.static_decoder.decode_static`) queues them through its batch.
    """
    prefixes = _check_prefixes(lm, prefixes)
    budget = _token_budget(lm, config, prefixes.shape[1])
    plan = decode_plan(lm, config, prefixes.shape[1], budget)
    if plan.static:
        return decode_static(lm, prefixes, rows, generators, config, plan, budget)
    image = torch.repeat_interleave(torch.arange(len(rows), device=lm.device), torch.tensor(rows, device=lm.device))
    with torch.inference_mode():
        keys, values, logits = encode_prefix(lm, prefixes)
        tables = padded_word_tables(lm.tokenizer, logits.shape[-1], lm.device)
        cache = Cache(layers=[SharedPrefixLayer(k, v, image) for k, v in zip(keys, values)])
        ids = _decode_batch(lm, cache, logits[image], image, generators, tables, config, budget)
    out: list[list[list[int]]] = [[] for _ in rows]
    for sentence, i in zip(ids, image.tolist()):
        out[i].append(sentence)
    return out


def _check_prefixes(lm: FrozenLM, prefixes: Tensor) -> Tensor:
    """Prefixes (n, P, d) on the LM's device and dtype, or a one-line error."""
    if prefixes.dim() != 3 or prefixes.shape[1] < 1 or prefixes.shape[2] != lm.embed_dim:
        raise TexplainError(f"sampling: a prefix must have shape (K, {lm.embed_dim}), got {tuple(prefixes.shape[1:])}")
    return prefixes.detach().to(device=lm.device, dtype=lm.dtype)


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
    first_logits: Tensor,
    image: Tensor,
    generators: Sequence[torch.Generator],
    tables: tuple[Tensor, Tensor, Tensor],
    config: SamplingConfig,
    budget: int,
) -> list[list[int]]:
    """Decode one batch of sentences from a cache that holds only the rows' prefixes.

    Rows of the batch are sentences; ``sample`` maps each row to its sentence,
    ``image`` to its image (whose generator draws its tokens), ``alive`` marks
    rows still writing, ``words`` counts their words and ``fresh`` says that no
    letter or digit followed their last whitespace (see
    :func:`~texplain.generate.word_boundaries.word_tables`). Finished rows
    draw nothing and feed a filler token (their outputs are ignored) until
    enough of them have piled up to be dropped from the batch and the cache.
    """
    device, eos = lm.device, lm.eos_token_id
    filler, cache_name = _filler_token(lm), cache_argument(lm.model)
    batch = image.shape[0]
    sample = torch.arange(batch, device=device)  # (B,) sentence of each row
    alive = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
    words = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    fresh = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
    tokens = torch.full((batch, budget), eos, dtype=torch.long, device=device)  # (B0, budget) by sentence
    lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B0,) by sentence
    logits = first_logits  # (B, V)
    for step in range(budget):
        token = torch.full((alive.shape[0],), filler, dtype=torch.long, device=device)  # (B,)
        for i, generator in enumerate(generators):
            rows = (alive & (image == i)).nonzero().squeeze(1)  # (b,) this image's live rows, in order
            if rows.numel():
                token[rows] = _next_tokens(logits[rows], words[rows], eos, config, generator)
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
            keep = alive.nonzero().squeeze(1)  # (B',)
            cache.batch_select_indices(keep)
            sample, image, alive, words, fresh, token = (x[keep] for x in (sample, image, alive, words, fresh, token))
        token = torch.where(alive, token, filler)  # (B,)
        step_inputs = {"input_ids": token[:, None], cache_name: cache, "use_cache": True}
        logits = lm.model(**step_inputs).logits[:, -1].float()  # (B, V)
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]


def _filler_token(lm: FrozenLM) -> int:
    """A token id that finished rows feed: not the padding id, which makes some models warn about masks."""
    pad = getattr(lm.tokenizer, "pad_token_id", None)
    return 1 if pad == 0 else 0
