"""The nucleus draw: one token per row, exactly from the top-p distribution, without sorting the vocabulary.

:func:`nucleus_filter` defines the nucleus (the smallest set of most probable
tokens whose mass reaches ``top_p``, ties ranked by token id). Two exact
draws from it serve the two decoders:

- :func:`sample_nucleus` (the eager decoder, CPU): an inverse-CDF draw from
  the full distribution, redrawn when it falls outside the nucleus. Sorting
  and ``multinomial``'s (B, V) random numbers were four fifths of the
  sampler's time on CPU; the LM's forward pass is now most of it. Its
  rejections make the number of random numbers, and so the shapes, vary.
- :func:`fast_nucleus` (the static decoder, GPUs): one given uniform per row,
  inverted through the nucleus CDF with tokens in the filter's order
  (:func:`inverse_nucleus` defines it, with a full sort). Only the
  :data:`CANDIDATES` most probable tokens are sorted; a row whose nucleus may
  reach beyond them is sorted whole, in a batch of fixed size, so nothing
  waits for the host. Both paths give the same token for the same uniform.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

CDF_BLOCK = 64
"""Tokens per block of the two-level inverse-CDF draw."""

REJECTION_ROUNDS = 8
"""Draws per row before :func:`sample_nucleus` falls back to sorting (see there)."""

CANDIDATES = (256, 4096)
"""How many of the most probable tokens :func:`fast_nucleus` looks for the nucleus among, in turn, before a whole sort.

SmolLM2-135M writing after a caption-like prefix at p = 0.95 (600 steps):
the top 256 tokens hold the nucleus in 39% of steps, the top 1024 in 66%,
the top 4096 in 98%. A small LM's tail is long.
"""


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
        u = torch.rand(rows.shape[0], generator=generator, dtype=torch.float64, device=probs.device)  # (b,)
        draw = _inverse_cdf_draw(rows, u)  # (b,)
        accept = _in_nucleus(rows, draw, top_p)  # (b,)
        tokens[pending[accept]] = draw[accept]
        pending = pending[~accept]
        if pending.shape[0] == 0:
            return tokens
    filtered = torch.softmax(nucleus_filter(logits[pending].float(), top_p), dim=-1)  # (b, V)
    tokens[pending] = torch.multinomial(filtered, 1, generator=generator).squeeze(1)
    return tokens


def fast_nucleus(
    probs: Tensor, top_p: float, uniforms: Tensor, candidates: Sequence[int] = CANDIDATES,
    capacities: Sequence[int] | None = None, rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token ids (B,) at ``uniforms`` (B,) of each row's nucleus CDF, given probabilities (B, V), without host syncs.

    The same token as :func:`inverse_nucleus` (up to float rounding of the
    cumulative sums), so the draw is exact. The ``candidates[0]`` most
    probable tokens are ranked as the filter ranks them (probability, then
    id); a row is settled by them when one of its candidates that is strictly
    more probable than the least probable candidate already lies outside the
    nucleus, since every token ranked above such a candidate is a candidate.
    The other rows among ``rows`` (B,) (default: all) go on, gathered into a
    batch of fixed size ``capacities[0]`` (default B), to the next number of
    candidates, and after the last to a whole sort. Returns the tokens and,
    per tier, how many rows went on from it (a tensor of len(candidates));
    where that is more than the tier's capacity the tokens of the rows beyond
    it are wrong, and the caller must draw again with larger capacities.
    ``top_p = 1`` has no nucleus to find: the full distribution is inverted
    in token order (:func:`_inverse_cdf_draw`), exact too, but another token
    than :func:`inverse_nucleus` gives for the same uniform.
    """
    batch, vocab = probs.shape
    passed = probs.new_zeros(len(candidates), dtype=torch.long)  # (tiers,)
    if top_p >= 1.0:
        return _inverse_cdf_draw(probs, uniforms), passed
    values, ids = probs.topk(min(candidates[0], vocab), dim=-1)  # (B, k), most probable first
    ids, by_id = ids.sort(dim=-1)  # (B, k)
    values, order = values.gather(1, by_id).sort(dim=-1, descending=True, stable=True)  # (B, k): ties by lower id
    ids = ids.gather(1, order)  # (B, k)
    rank, member = _ranked_draw(values, top_p, uniforms)  # (B, 1), (B, k)
    tokens = ids.gather(1, rank).squeeze(1)  # (B,)
    if values.shape[1] == vocab:
        return tokens, passed
    settled = (~member & (values > values[:, -1:])).any(dim=-1)  # (B,)
    need = ~settled if rows is None else ~settled & rows  # (B,)
    capacity = batch if capacities is None else capacities[0]
    slot = need.cumsum(0) - 1  # (B,) place of each row that goes on among them
    slot = torch.where(need & (slot < capacity), slot, capacity)  # (B,) beyond capacity: a spare slot
    everyone = torch.arange(batch, device=probs.device)  # (B,)
    chosen = torch.zeros(capacity + 1, dtype=torch.long, device=probs.device).scatter_(0, slot, everyone)[:capacity]
    used = torch.arange(capacity, device=probs.device) < need.sum()  # (C,) slots that hold a row
    if len(candidates) > 1:
        later, further = fast_nucleus(probs[chosen], top_p, uniforms[chosen], candidates[1:],
                                      None if capacities is None else capacities[1:], used)  # (C,), (tiers - 1,)
        passed[1:] = further
    else:
        later = inverse_nucleus(probs[chosen], top_p, uniforms[chosen])  # (C,)
    target = torch.where(used, chosen, batch)  # (C,) unused slots write to a spare row
    tokens = torch.cat([tokens, tokens.new_zeros(1)]).scatter_(0, target, later)[:batch]  # (B,)
    passed[0] = need.sum()
    return tokens, passed


def inverse_nucleus(probs: Tensor, top_p: float, uniforms: Tensor) -> Tensor:
    """The definition :func:`fast_nucleus` follows: the token (b,) at ``uniforms`` (b,) of the nucleus CDF.

    probs (b, V) are sorted whole, most probable first and ties by lower id
    (as :func:`nucleus_filter` ranks them); the nucleus is the filter's; the
    token is the first whose cumulative nucleus mass exceeds u times the
    nucleus's mass. A uniform u in [0, 1) gives each nucleus token its
    renormalised probability.
    """
    ranked, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (b, V)
    rank, _ = _ranked_draw(ranked, top_p, uniforms)  # (b, 1)
    return order.gather(1, rank).squeeze(1)


def _ranked_draw(ranked: Tensor, top_p: float, uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """Rank (b, 1) drawn by ``uniforms`` (b,) from probabilities ranked as the filter ranks them (b, n), and the nucleus (b, n).

    Membership is the filter's test (the float32 mass ranked above a token is
    below ``top_p``; the first token always); the draw inverts the float64
    cumulative mass of the members, never landing on one of zero probability.
    """
    member = ranked.cumsum(dim=-1) - ranked < top_p  # (b, n)
    member[:, 0] = True
    weights = torch.where(member, ranked, 0.0).double()  # (b, n)
    cdf = weights.cumsum(dim=-1)  # (b, n)
    target = uniforms.double()[:, None] * cdf[:, -1:]  # (b, 1)
    rank = torch.searchsorted(cdf, target, right=True)  # (b, 1)
    last = (weights > 0).sum(dim=-1, keepdim=True) - 1  # (b, 1) last member of positive mass
    return torch.minimum(rank, last), member


def _inverse_cdf_draw(probs: Tensor, uniforms: Tensor) -> Tensor:
    """The token (b,) at ``uniforms`` (b,) of each row's CDF of probabilities (b, V), inverted in two levels.

    A cumulative sum over all V tokens in float64 costs more than the rest of
    a draw; summing blocks of :data:`CDF_BLOCK` tokens, picking a block by its
    mass, and then a token inside it by its share touches each probability
    once. A token of zero probability is never picked.
    """
    rows, vocab = probs.shape
    padded = torch.nn.functional.pad(probs, (0, -vocab % CDF_BLOCK)) if vocab % CDF_BLOCK else probs
    blocks = padded.view(rows, -1, CDF_BLOCK)  # (b, nb, S)
    block_cdf = blocks.sum(dim=-1).double().cumsum(dim=-1)  # (b, nb)
    u = uniforms.double()[:, None] * block_cdf[:, -1:]  # (b, 1)
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
