"""Translator shapes, checkpoint round trip, and refusal of a mismatched pairing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_vit
from texplain.errors import TexplainError
from texplain.models.config import TranslatorConfig
from texplain.models.translator import Provenance, Translator, contiguous_average, load_translator, save_translator

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
"""A chat template of the tiny LM's tokenizer: a chat LM's start without a chat LM."""
NO_SYSTEM_TEMPLATE = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + CHAT_TEMPLATE
"""A template that refuses a system turn, as Gemma's does."""
USER_ONLY_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<user>{{ m['content'] }}</user>{% endif %}"
                      "{% endfor %}<assistant>")


@pytest.mark.parametrize("tokens,mode,resolved", [(17, "auto", "pooled"), (1, "auto", "flatten"), (5, "flatten", "flatten"),
                                                  (17, "token", "token"), (17, "resampler", "resampler")])
@pytest.mark.parametrize("start_token", [True, False])
@pytest.mark.parametrize("start_len", [1, 3])
def test_output_shape(tokens, mode, resolved, start_token, start_len):
    config = TranslatorConfig(in_tokens=tokens, in_dim=12, lm_dim=8, prefix_len=4, hidden=16, mode=mode,
                              start_token=start_token, start_len=start_len)
    translator = Translator(config).train()
    assert config.resolved_mode == resolved
    shape = translator(torch.randn(3, tokens, 12)).shape
    assert shape == (3, config.output_len, 8) == (3, 4 + start_len * start_token, 8)


@pytest.mark.parametrize("mode", ["pooled", "token", "resampler"])
@pytest.mark.parametrize("start_len", [1, 5])
def test_an_untrained_residual_translator_says_nothing(mode, start_len):
    """Step 0: the prefix is the LM's null slots and start, whatever the features, in train and eval mode."""
    null, start = torch.randn(8), torch.randn(start_len, 8)
    translator = Translator(TranslatorConfig(in_tokens=6, in_dim=12, lm_dim=8, prefix_len=3, hidden=16, mode=mode,
                                             start_len=start_len))
    translator.anchor(null, start)
    for training in (True, False):
        prefix = translator.train(training)(torch.randn(4, 6, 12))
        assert torch.equal(prefix[:, :3], null.expand(4, 3, 8)) and torch.equal(prefix[:, 3:], start.expand(4, -1, -1))
        assert torch.equal(prefix[0], translator.resting_prefix())
    assert torch.equal(translator.lm_start(), start)
    with pytest.raises(TexplainError, match="do not fit its start"):
        translator.anchor(null, torch.randn(start_len + 1, 8))


def test_wrong_feature_shape_is_refused():
    translator = Translator(TranslatorConfig(in_tokens=5, in_dim=12, lm_dim=8))
    with pytest.raises(TexplainError, match=r"\(5, 12\)"):
        translator(torch.randn(2, 6, 12))


def test_token_mix_starts_as_contiguous_averages():
    weight = contiguous_average(6, 3)
    assert torch.allclose(weight, torch.tensor([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 0.5, 0.5]]))
    assert torch.allclose(contiguous_average(5, 5), torch.eye(5))


def test_bad_config():
    with pytest.raises(TexplainError, match="mode"):
        TranslatorConfig(in_tokens=1, in_dim=1, lm_dim=1, mode="dense")
    with pytest.raises(TexplainError, match="prefix_len"):
        TranslatorConfig(in_tokens=1, in_dim=1, lm_dim=1, prefix_len=0)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    config = TranslatorConfig(in_tokens=7, in_dim=12, lm_dim=8, prefix_len=3, hidden=16, residual=False)
    translator = Translator(config, Provenance(classifier="timm:vit_x", feature_layer="norm", lm="gpt2"))
    translator.anchor(torch.randn(8), torch.randn(8)).eval()
    save_translator(translator, tmp_path / "t")
    again = load_translator(tmp_path / "t", classifier="timm:vit_x", feature_layer="norm", lm="gpt2")
    x = torch.randn(2, 7, 12)
    assert torch.equal(translator(x), again(x))
    assert again.config == config
    with pytest.raises(TexplainError, match="trained for classifier 'timm:vit_x', not 'timm:resnet50'"):
        load_translator(tmp_path / "t", classifier="timm:resnet50")
    with pytest.raises(TexplainError, match="language model"):
        load_translator(tmp_path / "t", lm="smollm2")
    with pytest.raises(TexplainError, match="not a translator checkpoint"):
        load_translator(tmp_path)


def test_a_checkpoint_from_before_the_anchors_loads_as_it_was(tmp_path):
    old = {"in_tokens": 7, "in_dim": 12, "lm_dim": 8, "prefix_len": 3, "hidden": 16, "mode": "auto", "dropout": 0.1}
    translator = Translator(TranslatorConfig(**old, residual=False, start_token=False)).eval()
    assert translator.config.resolved_mode == "pooled"
    token = Translator(TranslatorConfig(**{**old, "mode": "token"}, residual=False, start_token=False)).eval()
    save_translator(token, tmp_path / "t")
    record = json.loads((tmp_path / "t" / "translator.json").read_text())
    for key in ("residual", "start_token", "feature_dropout"):
        record["config"].pop(key)
    record["provenance"].pop("lm_recipe")
    (tmp_path / "t" / "translator.json").write_text(json.dumps(record))
    state = load_file(str(tmp_path / "t" / "translator.safetensors"))
    save_file({k: v for k, v in state.items() if k not in ("null", "start")}, str(tmp_path / "t" / "translator.safetensors"))
    again = load_translator(tmp_path / "t")
    assert again.config.resolved_mode == "token" and not again.config.start_token
    x = torch.randn(2, 7, 12)
    assert torch.equal(token(x), again(x))


def test_a_checkpoint_from_before_starts_had_a_kind_loads_with_its_end_of_sentence_start(tmp_path):
    """Its start was saved as one (d,) embedding and its config has no anchor: it loads as the one-token eos start."""
    translator = Translator(TranslatorConfig(in_tokens=5, in_dim=12, lm_dim=8, prefix_len=3, hidden=16)).eval()
    translator.anchor(torch.randn(8), torch.randn(8))
    save_translator(translator, tmp_path / "t")
    record = json.loads((tmp_path / "t" / "translator.json").read_text())
    for key in ("anchor", "start_len"):
        record["config"].pop(key)
    (tmp_path / "t" / "translator.json").write_text(json.dumps(record))
    state = load_file(str(tmp_path / "t" / "translator.safetensors"))
    save_file({**state, "start": state["start"][0]}, str(tmp_path / "t" / "translator.safetensors"))
    again = load_translator(tmp_path / "t")
    assert again.config.anchor == "eos" and again.config.start_len == 1 and again.config.output_len == 4
    x = torch.randn(2, 5, 12)
    assert torch.equal(translator(x), again(x))


def test_a_translator_refuses_an_lm_of_another_recipe(tiny_lm):
    from texplain.models.translator import new_translator

    classifier = tiny_vit(3)
    translator = new_translator(classifier, tiny_lm, (101, 64), hidden=16)
    assert translator.provenance.lm_recipe == tiny_lm.recipe and translator.config.prefix_len == tiny_lm.recipe["slots"]
    eos = tiny_lm.embed_tokens(torch.tensor([tiny_lm.eos_token_id]))  # a caption LM's null slot and start, as before
    assert translator.config.anchor == "eos" and torch.equal(translator.start, eos) and torch.equal(translator.null, eos[0])
    translator.check_lm(tiny_lm)
    translator.provenance.lm_recipe = {"format": "word-slots", "slots": 3, "start": "eos"}
    with pytest.raises(TexplainError, match="prefix recipe"):
        translator.check_lm(tiny_lm)


def chat_lm(tiny_lm_folder, template: str | None = CHAT_TEMPLATE, bos: str | None = None):
    """The tiny caption LM without its prefix recipe, its tokenizer given a chat template (and a start token)."""
    from texplain.models.lm import FrozenLM, load_lm

    lm = load_lm(str(tiny_lm_folder))
    lm.model.config.texplain_recipe = None
    lm.tokenizer.chat_template = template
    if bos:
        lm.tokenizer.add_special_tokens({"bos_token": bos})
    return FrozenLM(lm.model, lm.tokenizer, "chat-lm")


def test_the_start_is_where_the_lm_alone_writes_captions(tiny_lm, tiny_lm_folder):
    """A prefix-ready LM starts at its end-of-sentence token; a chat LM at its template's request for a caption."""
    from conftest import make_tokenizer
    from texplain.models.lm import CAPTION_REQUEST, CAPTION_STYLE, FrozenLM, start_tokens

    assert start_tokens(tiny_lm) == ("eos", [tiny_lm.eos_token_id])
    lm = chat_lm(tiny_lm_folder)
    anchor, ids = start_tokens(lm)
    assert anchor == "chat"
    assert lm.tokenizer.decode(ids) == f"<system>{CAPTION_STYLE}</system><user>{CAPTION_REQUEST}</user><assistant>"
    no_system = chat_lm(tiny_lm_folder, template=NO_SYSTEM_TEMPLATE)
    in_user_turn = no_system.tokenizer.decode(start_tokens(no_system)[1])
    assert in_user_turn == f"<user>{CAPTION_STYLE} {CAPTION_REQUEST}</user><assistant>"
    assert start_tokens(lm, "eos") == ("eos", [lm.eos_token_id])
    plain = chat_lm(tiny_lm_folder, template=None)
    assert start_tokens(plain) == ("eos", [plain.eos_token_id])  # its beginning of text is its end of sentence
    assert start_tokens(plain, "bos") == ("bos", [plain.eos_token_id])
    with pytest.raises(TexplainError, match="no beginning-of-text token"):
        start_tokens(FrozenLM(plain.model, make_tokenizer(), "no-bos"), "bos")
    with pytest.raises(TexplainError, match="no chat template"):
        start_tokens(plain, "chat")
    with_bos = chat_lm(tiny_lm_folder, template=None, bos="<s>")
    assert start_tokens(with_bos) == ("bos", [with_bos.tokenizer.convert_tokens_to_ids("<s>")])
    with pytest.raises(TexplainError, match="anchor 'caption'"):
        start_tokens(lm, "caption")


def test_a_chat_lm_translator_records_its_start_and_the_lm_alone_uses_it(tiny_lm_folder, tmp_path):
    from texplain.analysis.lm_prior import explain_prior
    from texplain.generate.config import ExplainConfig, SamplingConfig
    from texplain.generate.explain import explain_lm_alone
    from texplain.models.lm import start_tokens
    from texplain.models.translator import new_translator

    lm = chat_lm(tiny_lm_folder, template=USER_ONLY_TEMPLATE)  # a start that leaves room in the tiny LM's 64 positions
    _, ids = start_tokens(lm)
    translator = new_translator(tiny_vit(), lm, (101, 64), prefix_len=3, hidden=16).eval()
    assert translator.config.anchor == "chat" and translator.config.start_len == len(ids) > 1
    start = lm.embed_tokens(torch.tensor(ids))
    assert torch.equal(translator.start, start)
    assert torch.equal(translator.null, lm.embed_tokens(torch.tensor(lm.eos_token_id)))
    assert torch.equal(translator(torch.randn(2, 101, 64))[:, 3:], start.expand(2, -1, -1))
    save_translator(translator, tmp_path / "t")
    again = load_translator(tmp_path / "t")
    assert again.config == translator.config and torch.equal(again.start, start)

    config = ExplainConfig(sampling=SamplingConfig(num_samples=6, min_words=2, max_words=6, batch_size=6))
    alone = explain_lm_alone(lm, config, translator.lm_start())
    prior = explain_prior(translator, lm, [("lm", None)], config, {})
    assert prior.counter.document_counts() == alone.counter.document_counts() != {}
    after_eos = explain_lm_alone(lm, config)
    assert after_eos.sentences != alone.sentences  # the chat start is not the end-of-sentence token
