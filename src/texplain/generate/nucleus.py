"""The nucleus draw: one token per row, exactly from the top-p distribution, without sorting.

:func:`nucleus_filter` defines the nucleus (the smallest set of most probable
tokens whose mass reaches ``top_p``, ties ranked by token id).
:func:`sample_nucleus` draws from it exactly, but without sorting the
vocabulary: an inverse-CDF draw from the full distribution, redrawn when it
falls outside the nucleus. Sorting and ``multinomial``'s (B, V) random numbers
were four fifths of the sampler's time on CPU; the LM's forward pass is now
most of it.
"""

from __future__ import annotations

import torch
from torch import Tensor

CDF_BLOCK = 64
"""Tokens per block of the two-level inverse-CDF draw."""

REJECTION_ROUNDS = 8
"""Draws per row before :func:`sample_nucleus` falls back to sorting (see there)."""



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
