"""What trains: the head alone keeps the features (a translator for them still applies); the last stages train alike from cached inputs; early stopping keeps the best epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from texplain.errors import TexplainError
from texplain.models.classifiers import load_classifier, save_classifier
from texplain.models.config import TranslatorConfig
from texplain.models.translator import Provenance, Translator, load_translator, save_translator
from texplain.training import classifier_training
from texplain.training.classifier_training import train_classifier
from texplain.training.config import ClassifierTrainConfig
from texplain.training.frozen_front import front_is_a_chain, last_stage, split_at, trained_modules


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
    train_classifier(cnn, pixels, labels, ClassifierTrainConfig(epochs=2, batch_size=4, lr=1e-2, trainable="head"), progress=False)
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
        train_classifier(cnn, pixels, labels, ClassifierTrainConfig(epochs=1, batch_size=4, trainable="head" if head_only else "all"), progress=False)
        save_classifier(cnn, tmp_path / f"head_only_{head_only}")
    assert load_classifier(str(tmp_path / "head_only_True")).feature_spec == "timm:test_resnet"
    load_translator(tmp_path / "translator", classifier=str(tmp_path / "head_only_True"))
    with pytest.raises(TexplainError, match="trained for classifier 'timm:test_resnet'"):
        load_translator(tmp_path / "translator", classifier=str(tmp_path / "head_only_False"))


def test_last_stages_are_the_last_resolution_stage_and_what_follows():
    cnn = load_classifier("timm:test_resnet", pretrained=False, num_classes=3).module
    assert last_stage(cnn) == "layer4"
    assert trained_modules(cnn, "last-stages") == (["layer4", "global_pool", "fc"], "layer4")
    lite = load_classifier("timm:efficientnet_lite0", pretrained=False, num_classes=3).module
    assert last_stage(lite) == "blocks.5"  # the stride-32 blocks: blocks.5 and blocks.6
    assert split_at(lite, "blocks.5")[0] == ["conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"]
    blocks = nn.Sequential(*(nn.Linear(4, 4) for _ in range(8)), nn.Linear(4, 2))
    assert last_stage(blocks) == "6"  # no stages named: the last quarter of the block list
    assert front_is_a_chain(cnn.eval(), "layer4", torch.randn(2, 3, 64, 64))
    vit = load_classifier("timm:test_vit", pretrained=False, num_classes=3).module.eval()
    assert not front_is_a_chain(vit, last_stage(vit), torch.randn(2, 3, 64, 64))  # position embeddings come after the cut


def test_last_stages_train_the_same_from_cached_inputs_as_from_pixels(monkeypatch):
    settings = ClassifierTrainConfig(epochs=2, batch_size=4, lr=1e-2, trainable="last-stages", backbone_lr=0.1)
    cached, pixels, labels = _cnn_and_data()
    before = {k: v.clone() for k, v in cached.module.state_dict().items()}
    train_classifier(cached, pixels, labels, settings, progress=False)
    changed = {k.split(".")[0] for k, v in cached.module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"layer4", "fc"}
    monkeypatch.setattr(classifier_training, "front_is_a_chain", lambda *args: False)
    every_step, _, _ = _cnn_and_data()
    train_classifier(every_step, pixels, labels, settings, progress=False)
    for (name, a), b in zip(cached.module.state_dict().items(), every_step.module.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_early_stopping_keeps_the_epoch_with_the_lowest_held_out_loss():
    cnn, pixels, labels = _cnn_and_data()
    held = (pixels[:6], (labels[:6] + 1) % 3)  # the held-out labels contradict training: its loss rises as training fits
    history = train_classifier(cnn, pixels, labels, ClassifierTrainConfig(epochs=8, batch_size=4, lr=3e-2, patience=2),
                               progress=False, held_out=held)
    best = min(history.held_out_losses)
    assert history.kept_epoch == history.held_out_losses.index(best) + 1
    assert len(history.losses) == history.kept_epoch + 2 < 8  # stopped two epochs after the best
    logits = cnn.module(held[0])
    assert nn.functional.cross_entropy(logits, held[1]).item() == pytest.approx(best, rel=1e-4)  # the best weights are back
