"""Caption tokens weighted by what an explanation counts: its content words.

The translator is trained on the LM's caption loss, where "a", "is", "the"
and the end of the sentence weigh as much as "dog" or "water"; an
explanation only ever counts content words (:mod:`texplain.text.words`).
With a ``content_weight`` above 1 the tokens of content words weigh that
much more in the loss, so the translator spends its capacity on the words a
user will read. The weights ride in the caption mask (B, L) that
:meth:`texplain.models.lm.FrozenLM.caption_loss` multiplies in: 1 for other
tokens and the end of sentence, ``content_weight`` for a token that overlaps
a content word, 0 for padding. Tokens are matched to words by their
character offsets, which fast (Rust) tokenizers give.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from texplain.errors import TexplainError
from texplain.text.config import WordConfig
from texplain.text.words import content_word_spans


def content_weights(tokenizer, captions: Sequence[str], ids: Tensor, mask: Tensor, content_weight: float) -> Tensor:
    """``mask`` (B, L) of ``captions`` tokenised as ``ids``, as floats, content words' tokens times ``content_weight``.

    ``ids`` and ``mask`` come from
    :meth:`~texplain.models.lm.FrozenLM.tokenize_captions` of the same
    captions: each row's tokens, cut to the mask's length, then its EOS.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TexplainError("content_weight needs a fast tokenizer (one that gives character offsets)")
    out = mask.float().clone()
    config = WordConfig()
    for row, caption in enumerate(captions):
        text = caption.strip()
        spans = content_word_spans(text, config)
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        words = int(mask[row].sum()) - 1  # the row's tokens before its EOS
        for token, (start, end) in enumerate(offsets[:words]):
            if any(start < stop and begin < end for begin, stop in spans):
                out[row, token] *= content_weight
    return out
