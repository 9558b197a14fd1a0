"""Classifiers load by name, hooks capture the right shapes, and are always removed."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from conftest import tiny_vit
from texplain.errors import TexplainError
from texplain.models.classifiers import (
    Classifier,
    capture,
    load_classifier,
    save_classifier,
)


def _pixels(classifier, n: int = 2):
    image = Image.new("RGB", (80, 60), (30, 120, 200))
    return torch.stack([classifier.preprocess(image)] * n)


def test_tiny_vit_hook_gives_all_tokens():
    vit = tiny_vit()
    x = _pixels(vit)
    feats, logits = vit.features_and_logits(x)
    patches = (vit.module.patch_embed.img_size[0] // vit.module.patch_embed.patch_size[0]) ** 2
    assert vit.feature_layer == "norm"
    assert feats.shape == (2, patches + 1, vit.module.embed_dim)  # P + 1 tokens
    assert torch.allclose(feats, vit.module.forward_features(x))  # timm's tokens after the final norm
    assert torch.allclose(logits, vit.module(x))


def test_tiny_cnn_hook_gives_spatial_map():
    cnn = load_classifier("timm:test_resnet", pretrained=False, num_classes=4)
    x = _pixels(cnn)
    feats, _ = cnn.features_and_logits(x)
    spatial = cnn.module.forward_features(x)  # (B, C, H, W)
    assert cnn.feature_layer == "global_pool:input"
    assert feats.shape == (2, spatial.shape[2] * spatial.shape[3], spatial.shape[1])
    assert torch.allclose(feats, spatial.flatten(2).transpose(1, 2))


def test_named_layer_and_hooks_removed_even_on_error():
    vit = load_classifier("timm:test_vit", pretrained=False, num_classes=3, feature_layer="blocks.0")
    feats, _ = vit.features_and_logits(_pixels(vit))
    assert feats.shape[-1] == vit.module.embed_dim
    block = vit.module.blocks[0]
    assert not block._forward_hooks
    hooks_inside = []
    with pytest.raises((RuntimeError, AssertionError)):
        with capture(vit.module, "blocks.0"):
            hooks_inside.append(len(block._forward_hooks))
            vit.module(torch.zeros(1, 3, 7, 7))  # wrong size: the forward pass raises
    assert hooks_inside == [1]
    assert not block._forward_hooks


def test_unknown_layer_is_refused():
    with pytest.raises(TexplainError, match="no module named 'nope'"):
        load_classifier("timm:test_vit", pretrained=False, feature_layer="nope")


def test_torchvision_and_plain_module():
    tv = load_classifier("torchvision:resnet18", pretrained=False, num_classes=5)
    x = _pixels(tv, 1)
    feats, logits = tv.features_and_logits(x)
    assert tv.feature_layer == "avgpool:input" and feats.shape == (1, 49, 512)
    spatial = nn.Sequential(*list(tv.module.children())[:-2])(x)  # (1, 512, 7, 7): layer4's map, before the pool
    assert torch.allclose(feats, spatial.flatten(2).transpose(1, 2))
    assert torch.allclose(logits, tv.module(x))

    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    own = Classifier.from_module(net, class_names=["cat", "dog"])
    x = _pixels(own, 1)
    feats, logits = own.features_and_logits(x)
    assert own.feature_layer == "5:input" and feats.shape == (1, 1, 8)
    assert torch.allclose(feats[:, 0], net[:5](x)) and torch.allclose(logits, net(x))


def test_hf_vit_from_folder(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"})
    ViTForImageClassification(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    hf = load_classifier(f"hf:{tmp_path}")
    x = _pixels(hf)
    feats, logits = hf.features_and_logits(x)
    assert hf.feature_layer == "vit.layernorm"
    assert feats.shape == (2, 17, 16)  # 16 patches + CLS
    assert torch.allclose(feats, hf.module.vit(x).last_hidden_state)  # the encoder's normed tokens
    assert torch.allclose(logits, hf.module(x).logits)
    assert hf.class_names == ["cat", "dog", "bird"]


def tiny_net():
    return nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))


def test_factory_spec():
    own = load_classifier("test_classifiers:tiny_net")
    assert own.feature_layer == "3:input" and own.class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(TexplainError, match="cannot find a default feature layer"):
        load_classifier("torch.nn:Identity")
    with pytest.raises(TexplainError, match="cannot import"):
        load_classifier("no_such_package.mod:factory")


def test_unknown_spec():
    with pytest.raises(TexplainError, match="unknown name"):
        load_classifier("nonsense")


def test_save_and_reload(tmp_path):
    vit = tiny_vit()
    vit.class_names = ["a", "b", "c"]
    save_classifier(vit, tmp_path / "cls")
    again = load_classifier(str(tmp_path / "cls"))
    x = _pixels(vit)
    assert again.class_names == ["a", "b", "c"]
    assert torch.equal(vit.features_and_logits(x)[1], again.features_and_logits(x)[1])


@pytest.mark.slow
def test_efficientnet_lite0_real_weights_recognise_a_cat():
    """The bundled ImageNet weights, mapped onto timm, see scikit-image's chelsea as a cat."""
    data = pytest.importorskip("skimage.data")
    classifier = load_classifier("efficientnet_lite0")
    image = Image.fromarray(data.chelsea())
    _, logits = classifier.features_and_logits(classifier.preprocess(image).unsqueeze(0))
    top3 = logits[0].topk(3).indices.tolist()
    assert set(top3) <= {281, 282, 285, 287}
    assert classifier.class_names[281] == "tabby"
