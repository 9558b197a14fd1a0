"""Head-only training keeps a classifier's features, so a translator for them still applies."""

from __future__ import annotations

import pytest
import torch

from texplain.errors import TexplainError
from texplain.models.classifiers import load_classifier, save_classifier
from texplain.models.config import TranslatorConfig
from texplain.models.translator import Provenance, Translator, load_translator, save_translator
from texplain.training.classifier_training import train_classifier
from texplain.training.config import ClassifierTrainConfig


def _cnn_and_data():
    """A tiny batch-norm CNN (batch norm would drift if the frozen part ever ran in train mode) and 12 labelled images."""
    torch.manual_seed(0)
    cnn = load_classifier("timm:test_resnet", pretrained=False, num_classes=3)
    pixels = torch.randn(12, 3, 64, 64)
    labels = torch.arange(12) % 3
    return cnn, pixels, labels


def test_head_only_changes_the_head_and_nothing_before_it():
    cnn, pixels, labels = _cnn_and_data()
    before = {k: v.clone() for k, v in cnn.module.state_dict().items()}
    features_before, logits_before = cnn.features_and_logits(pixels)
    train_classifier(cnn, pixels, labels, ClassifierTrainConfig(epochs=2, batch_size=4, lr=1e-2, head_only=True), progress=False)
    features_after, logits_after = cnn.features_and_logits(pixels)
    changed = {k for k, v in cnn.module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}
    assert torch.equal(features_before, features_after)
    assert not torch.allclose(logits_before, logits_after)
    assert cnn.features_of == "timm:test_resnet"
    assert not cnn.module.training and not any(p.requires_grad for p in cnn.module.parameters())


def test_full_training_changes_the_features_and_claims_no_other_source():
    cnn, pixels, labels = _cnn_and_data()
    features_before, _ = cnn.features_and_logits(pixels)
    train_classifier(cnn, pixels, labels, ClassifierTrainConfig(epochs=1, batch_size=4, lr=1e-2), progress=False)
    assert not torch.allclose(features_before, cnn.features_and_logits(pixels)[0])
    assert cnn.features_of == ""


def test_a_translator_for_the_base_features_fits_a_head_only_classifier(tmp_path):
    translator = Translator(TranslatorConfig(in_tokens=4, in_dim=8, lm_dim=8, prefix_len=2, hidden=8),
                            Provenance(classifier="timm:test_resnet", feature_layer="global_pool:input", lm="lm"))
    save_translator(translator, tmp_path / "translator")
    for head_only in (True, False):
        cnn, pixels, labels = _cnn_and_data()
        train_classifier(cnn, pixels, labels, ClassifierTrainConfig(epochs=1, batch_size=4, head_only=head_only), progress=False)
        save_classifier(cnn, tmp_path / f"head_only_{head_only}")
    assert load_classifier(str(tmp_path / "head_only_True")).feature_spec == "timm:test_resnet"
    load_translator(tmp_path / "translator", classifier=str(tmp_path / "head_only_True"))
    with pytest.raises(TexplainError, match="trained for classifier 'timm:test_resnet'"):
        load_translator(tmp_path / "translator", classifier=str(tmp_path / "head_only_False"))
