"""How strongly a translated prefix makes the frozen LM say a word: the score every word heat map localises.

The score is the LM's log-probability of the word's tokens, teacher-forced
after the translated prefix and a short opening such as "a" (captions rarely
start with the word itself), averaged in probability over the openings.
Grad-CAM (:mod:`.gradcam`) differentiates it; keep (:mod:`.keep`) and
occlusion (:mod:`.occlusion`) evaluate it on masked copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from texplain.errors import TexplainError
from texplain.models.lm import FrozenLM

DEFAULT_TEMPLATES: tuple[str, ...] = ("", "a", "A")
"""Openings a word is scored after: none (the word starts the caption), "a" and "A".

Captions rarely start with the word itself; the word's probability is averaged
over these openings, so whichever the LM finds natural dominates.
"""


def word_token_rows(lm: FrozenLM, word: str, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[tuple[Tensor, int]]:
    """Token ids (L,) of ``template + word`` per template, with how many of the last ids are the word's."""
    if not word.strip() or not templates:
        raise TexplainError("word Grad-CAM: needs a non-empty word and at least one template")
    tokenize = lm.tokenizer
    rows = []
    for template in templates:
        opening = tokenize(template, add_special_tokens=False)["input_ids"] if template else []
        word_ids = tokenize((" " if template else "") + word.strip(), add_special_tokens=False)["input_ids"]
        rows.append((torch.tensor(opening + word_ids, dtype=torch.long), len(word_ids)))
    return rows


def word_log_prob(lm: FrozenLM, prefix: Tensor, rows: list[tuple[Tensor, int]]) -> Tensor:
    """Log-probability of a word after each prefix (B, K, d), averaged over openings: (B,).

    Each row from :func:`word_token_rows` is teacher-forced after the prefix;
    the word's score under one opening is the sum of its tokens' log-probs.
    Openings are averaged in probability (log-mean-exp).
    """
    batch, k = prefix.shape[:2]
    scores = []
    for ids, n_word in rows:
        ids = ids.to(lm.device)
        tokens = lm.embed_tokens(ids)[None].expand(batch, -1, -1)  # (B, L, d)
        inputs = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)  # (B, K+L, d)
        logits = lm.model(inputs_embeds=inputs).logits[:, k - 1 : -1].float()  # (B, L, V): predicts ids
        log_probs = logits.log_softmax(-1).gather(-1, ids[None, :, None].expand(batch, -1, 1))[..., 0]  # (B, L)
        scores.append(log_probs[:, -n_word:].sum(1))  # (B,)
    stacked = torch.stack(scores, dim=1)  # (B, n_templates)
    return stacked.logsumexp(1) - math.log(len(rows))  # (B,)
