"""Content-word weights in the translator's loss: which tokens they pick, and the weighted caption loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from texplain.errors import TexplainError
from texplain.text.config import WordConfig
from texplain.text.words import content_word_spans
from texplain.training.content_weights import content_weights


def test_content_word_spans_match_the_counted_words():
    sentence = "Two dogs are playing in the Water."
    spans = content_word_spans(sentence, WordConfig())
    assert [sentence[a:b] for a, b in spans] == ["Two", "dogs", "playing", "Water"]


def test_content_tokens_are_weighted_and_the_end_and_padding_are_not(tiny_lm):
    captions = ["a dog runs on the grass", "two fish"]
    ids, mask = tiny_lm.tokenize_captions(captions)
    weights = content_weights(tiny_lm.tokenizer, captions, ids, mask, 3.0)
    assert torch.equal(weights == 0, mask == 0)  # padding stays out
    for row, caption in enumerate(captions):
        n = int(mask[row].sum())
        assert weights[row, n - 1] == 1.0  # the end of the sentence
        heavy = [tiny_lm.tokenizer.decode([int(t)]) for t, w in zip(ids[row, : n - 1], weights[row]) if w == 3.0]
        light = [tiny_lm.tokenizer.decode([int(t)]) for t, w in zip(ids[row, : n - 1], weights[row]) if w == 1.0]
        words = "".join(heavy)
        assert all(w in words for w in ("dog", "runs", "grass") if w in caption)
        assert all(w in words for w in ("two", "fish") if w in caption)
        assert all(t.strip() in ("a", "on", "the", "") for t in light)


def test_weighted_loss_is_the_weighted_mean_of_token_losses(tiny_lm):
    torch.manual_seed(0)
    captions = ["a dog runs on the grass", "two fish"]
    prefix = torch.randn(2, 3, tiny_lm.embed_dim)
    ids, mask = tiny_lm.tokenize_captions(captions)
    weights = content_weights(tiny_lm.tokenizer, captions, ids, mask, 4.0)
    inputs = torch.cat([prefix, tiny_lm.embed_tokens(ids)], 1)
    attention = torch.cat([torch.ones(2, 3, dtype=torch.long), mask], 1)
    logits = tiny_lm.model(inputs_embeds=inputs, attention_mask=attention).logits[:, 2:-1]
    per_token = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    expected = (per_token * weights).sum() / weights.sum()
    assert torch.allclose(tiny_lm.caption_loss(prefix, ids, weights), expected, atol=1e-5)
    ones = content_weights(tiny_lm.tokenizer, captions, ids, mask, 1.0)
    assert torch.allclose(tiny_lm.caption_loss(prefix, ids, ones), tiny_lm.caption_loss(prefix, ids, mask), atol=1e-6)


def test_a_tokenizer_without_offsets_is_refused():
    slow = type("Slow", (), {"is_fast": False})()
    with pytest.raises(TexplainError, match="fast tokenizer"):
        content_weights(slow, ["a dog"], torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3), 2.0)


def test_a_word_level_tokenizer_weights_whole_words():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<eos>": 0, "a": 1, "dog": 2, "on": 3, "grass": 4}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")
    ids = torch.tensor([[1, 2, 3, 1, 4, 0]])
    weights = content_weights(tokenizer, ["a dog on a grass"], ids, torch.ones_like(ids), 2.0)
    assert weights[0].tolist() == [1.0, 2.0, 1.0, 1.0, 2.0, 1.0]
