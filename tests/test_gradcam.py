"""Grad-CAM on classes and words, and masking: hand-built models whose answers are known."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from conftest import tiny_vit
from texplain.attribution.fills import mask_image
from texplain.attribution.gradcam import class_cam, feature_cam, token_grid, word_cam
from texplain.attribution.word_score import word_log_prob, word_token_rows
from texplain.errors import TexplainError
from texplain.models.classifiers import Classifier
from texplain.models.config import TranslatorConfig
from texplain.models.translator import Translator


class RedBlue(nn.Module):
    """A 16-px CNN with a 4x4 feature map: channel 0 is the mean red of each 4x4 cell, channel 1 the mean blue.

    Class 0 is the pooled red channel, class 1 the pooled blue one, so the
    Grad-CAM of class 0 is the red map itself and that of class 1 the blue map.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, kernel_size=4, stride=4, bias=False)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1 / 16
            self.features.weight[1, 2] = 1 / 16
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(torch.relu(self.features(x))).flatten(1))


@pytest.fixture
def red_blue() -> tuple[Classifier, torch.Tensor]:
    """The CNN (feature layer ``global_pool:input``) and an image: red top-left cell, half-blue bottom-right cell."""
    classifier = Classifier.from_module(RedBlue(), preprocess=lambda image: image, class_names=["red", "blue"])
    pixels = torch.zeros(1, 3, 16, 16)
    pixels[0, 0, :4, :4] = 1.0
    pixels[0, 2, 12:, 12:] = 0.5
    return classifier, pixels


def test_class_cam_on_a_cnn_is_the_class_channel(red_blue):
    classifier, pixels = red_blue
    assert classifier.feature_layer == "global_pool:input"
    red = feature_cam(classifier, pixels, lambda _f, logits: logits[:, 0], upsample=False)
    blue = feature_cam(classifier, pixels, lambda _f, logits: logits[:, 1], upsample=False)
    expected_red = torch.zeros(4, 4)
    expected_red[0, 0] = 1.0
    expected_blue = torch.zeros(4, 4)
    expected_blue[3, 3] = 1.0  # 0.5 of blue, scaled to 1 by the maximum
    assert torch.equal(red, expected_red)
    assert torch.equal(blue, expected_blue)
    heat = class_cam(classifier, pixels, 0)
    assert heat.shape == (16, 16) and float(heat.max()) == 1.0 and float(heat.min()) == 0.0
    assert float(heat[:4, :4].mean()) > 0.5 and float(heat[8:, 8:].max()) == 0.0


def test_vit_tokens_are_mapped_to_their_patch_grid():
    """Score = channel 5 of one patch: channel 5 weighs 1/(h*w), the others 0, so the map is relu(channel 5)."""
    classifier = tiny_vit()
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, 160, 160)
    cam = feature_cam(classifier, pixels, lambda features, _logits: features[:, 37, 5], upsample=False)
    with torch.no_grad():
        features, _ = classifier.features_and_logits(pixels)  # (1, 101, 64)
    prefix, h, w = token_grid(classifier.module, features)
    assert (prefix, h, w) == (1, 10, 10)
    expected = features[0, 1:, 5].reshape(10, 10).clamp(min=0)  # patch tokens in row-major grid order
    assert torch.allclose(cam, expected / expected.max(), atol=1e-5)


def test_pooled_features_have_no_grid():
    with pytest.raises(TexplainError, match="not a spatial map"):
        token_grid(nn.Identity(), torch.zeros(2, 1, 64))


def test_word_log_prob_is_the_lm_probability_of_the_word(tiny_lm):
    """Hand chain rule: one forward pass per token, each reading the prefix and the tokens before it."""
    torch.manual_seed(0)
    prefix = torch.randn(2, 3, tiny_lm.embed_dim)
    word = "dog"
    ids = tiny_lm.tokenizer(word, add_special_tokens=False)["input_ids"]
    expected = torch.zeros(2)
    with torch.no_grad():
        for j, token in enumerate(ids):
            seen = tiny_lm.embed_tokens(torch.tensor(ids[:j], dtype=torch.long))[None].expand(2, -1, -1)
            logits = tiny_lm.model(inputs_embeds=torch.cat([prefix, seen], dim=1)).logits[:, -1]  # (2, V)
            expected += logits.log_softmax(-1)[:, token]
        got = word_log_prob(tiny_lm, prefix, word_token_rows(tiny_lm, word, templates=("",)))
        twice = word_log_prob(tiny_lm, prefix, word_token_rows(tiny_lm, word, templates=("", "")))
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(twice, expected, atol=1e-4)


def test_word_cam_on_a_vit(tiny_lm):
    classifier = tiny_vit()
    torch.manual_seed(0)
    translator = Translator(TranslatorConfig(in_tokens=101, in_dim=64, lm_dim=tiny_lm.embed_dim, prefix_len=4, hidden=32,
                                             residual=False)).eval()  # a residual one starts by ignoring the features
    pixels = torch.randn(1, 3, 160, 160)
    dog = word_cam(classifier, translator, lm=tiny_lm, pixels=pixels, word="dog")
    assert dog.shape == (160, 160)
    assert float(dog.min()) >= 0.0 and float(dog.max()) == pytest.approx(1.0)
    assert torch.equal(dog, word_cam(classifier, translator, tiny_lm, pixels, "dog"))
    assert not torch.allclose(dog, word_cam(classifier, translator, tiny_lm, pixels, "water"))


def test_mask_image_fills_only_the_hot_region():
    image = torch.arange(48, dtype=torch.float32).reshape(1, 3, 4, 4)
    heat = torch.zeros(4, 4)
    heat[:2, :2] = 1.0
    heat[3, 3] = 0.4
    masked = mask_image(image, heat, threshold=0.5, fill="mean")
    mean = image.mean(dim=(2, 3))  # (1, 3)
    assert torch.equal(masked[0, :, :2, :2], mean[0, :, None, None].expand(3, 2, 2))
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[:2, :2] = False
    assert torch.equal(masked[0][:, keep], image[0][:, keep])
    first = mask_image(image[0], heat, 0.5, "noise", torch.Generator().manual_seed(3))
    second = mask_image(image[0], heat, 0.5, "noise", torch.Generator().manual_seed(3))
    assert torch.equal(first, second) and not torch.equal(first[:, :2, :2], image[0, :, :2, :2])
    blurred = mask_image(image, heat, 0.5, "blur")
    assert torch.equal(blurred[0][:, keep], image[0][:, keep])


def test_mask_image_on_a_pil_image_resizes_the_heat():
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    image.paste((10, 10, 200), (0, 0, 4, 8))  # left half blue
    heat = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # left half hot
    masked = mask_image(image, heat, 0.5, "mean")
    assert isinstance(masked, Image.Image) and masked.size == (8, 8)
    assert masked.getpixel((0, 0)) == (105, 10, 105) and masked.getpixel((7, 7)) == (200, 10, 10)
    with pytest.raises(TexplainError, match="fill"):
        mask_image(image, heat, 0.5, "paint")
