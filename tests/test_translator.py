"""Translator shapes, checkpoint round trip, and refusal of a mismatched pairing."""

from __future__ import annotations

import pytest
import torch

from texplain.errors import TexplainError
from texplain.models.translator import (
    Provenance,
    Translator,
    TranslatorConfig,
    contiguous_average,
    load_translator,
    save_translator,
)


@pytest.mark.parametrize("tokens,mode,resolved", [(17, "auto", "token"), (1, "auto", "flatten"), (5, "flatten", "flatten")])
def test_output_shape(tokens, mode, resolved):
    config = TranslatorConfig(in_tokens=tokens, in_dim=12, lm_dim=8, prefix_len=4, hidden=16, mode=mode)
    translator = Translator(config)
    assert config.resolved_mode == resolved
    assert translator(torch.randn(3, tokens, 12)).shape == (3, 4, 8)


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
    config = TranslatorConfig(in_tokens=7, in_dim=12, lm_dim=8, prefix_len=3, hidden=16)
    translator = Translator(config, Provenance(classifier="timm:vit_x", feature_layer="norm", lm="gpt2")).eval()
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
