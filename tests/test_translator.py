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


@pytest.mark.parametrize("tokens,mode,resolved", [(17, "auto", "pooled"), (1, "auto", "flatten"), (5, "flatten", "flatten"),
                                                  (17, "token", "token"), (17, "resampler", "resampler")])
@pytest.mark.parametrize("start_token", [True, False])
def test_output_shape(tokens, mode, resolved, start_token):
    config = TranslatorConfig(in_tokens=tokens, in_dim=12, lm_dim=8, prefix_len=4, hidden=16, mode=mode, start_token=start_token)
    translator = Translator(config).train()
    assert config.resolved_mode == resolved
    assert translator(torch.randn(3, tokens, 12)).shape == (3, config.output_len, 8) == (3, 4 + start_token, 8)


@pytest.mark.parametrize("mode", ["pooled", "token", "resampler"])
def test_an_untrained_residual_translator_says_nothing(mode):
    """Step 0: the prefix is the LM's null slots and start token, whatever the features, in train and eval mode."""
    null, start = torch.randn(8), torch.randn(8)
    translator = Translator(TranslatorConfig(in_tokens=6, in_dim=12, lm_dim=8, prefix_len=3, hidden=16, mode=mode))
    translator.anchor(null, start)
    for training in (True, False):
        prefix = translator.train(training)(torch.randn(4, 6, 12))
        assert torch.equal(prefix[:, :3], null.expand(4, 3, 8)) and torch.equal(prefix[:, 3], start.expand(4, 8))


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


def test_a_translator_refuses_an_lm_of_another_recipe(tiny_lm):
    from texplain.models.translator import new_translator

    classifier = tiny_vit(3)
    translator = new_translator(classifier, tiny_lm, (101, 64), hidden=16)
    assert translator.provenance.lm_recipe == tiny_lm.recipe and translator.config.prefix_len == tiny_lm.recipe["slots"]
    translator.check_lm(tiny_lm)
    translator.provenance.lm_recipe = {"format": "word-slots", "slots": 3, "start": "eos"}
    with pytest.raises(TexplainError, match="prefix recipe"):
        translator.check_lm(tiny_lm)
