"""Masks at the resolution of the shortcut, fills without a class cue, and the heat-map layer."""

from __future__ import annotations

import pytest
import torch

from colour_world import BLUE, GREY, SIZE, colour_grid, train_words
from texplain.attribution.fills import mask_batch
from texplain.attribution.gradcam import finer_layer
from texplain.attribution.heat import region
from texplain.errors import TexplainError
from texplain.mitigation.config import MaskConfig
from texplain.mitigation.masks import cam_layer, localise, spare_maps
from texplain.models.classifiers import load_classifier

OBJECT = (slice(8, 24), slice(8, 24))


def square_on_water() -> torch.Tensor:
    """A grey 16 x 16 square object in the middle of blue water: (3, 32, 32)."""
    image = BLUE.expand(3, SIZE, SIZE).clone()
    image[:, OBJECT[0], OBJECT[1]] = GREY
    return image


def object_mask() -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[OBJECT] = True
    return mask


@pytest.mark.parametrize("heat", ["keep", "gradcam", "occlusion"])
def test_the_words_mask_covers_the_background_not_the_object(tiny_lm, tmp_path, heat):
    classifier = colour_grid()
    grey = torch.full((3, SIZE, SIZE), GREY)
    translator = train_words(classifier, tiny_lm, {"water": (square_on_water(), "two fish swimming in blue water"),
                                                   "plain": (grey, "a car driving on a wet road")}, tmp_path)
    config = MaskConfig(heat=heat, layer="features", grid=4, window=1)
    heat_map = localise(classifier, translator, tiny_lm, square_on_water()[None], "water", 0, config)
    masked = region(heat_map, (SIZE, SIZE), config.threshold)
    background = ~object_mask()
    iou = (masked & background).sum() / (masked | background).sum()
    assert iou >= 0.7, float(iou)
    assert (masked & object_mask()).float().mean() / object_mask().float().mean() <= 0.25  # the object stays


def two_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 on blue, class 1 on red, the same grey square object: the background is the only cue."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    red = torch.tensor([1.0, 0.1, 0.0])[:, None, None]
    images = torch.where(labels[:, None, None, None] == 0, BLUE, red).expand(n, 3, SIZE, SIZE).clone()
    images += 0.05 * torch.randn(images.shape, generator=generator)
    images[:, :, OBJECT[0], OBJECT[1]] = GREY
    return images, labels


def probe_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Held-out accuracy of a logistic regression on the pixels (the last quarter is held out)."""
    x = images.flatten(1)
    cut = 3 * len(x) // 4
    layer = torch.nn.Linear(x.shape[1], 2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(x[:cut]), labels[:cut]).backward()
        optimizer.step()
    return float((layer(x[cut:]).argmax(1) == labels[cut:]).float().mean())


def test_the_shuffle_fill_leaves_no_class_cue_where_the_mean_fill_does():
    torch.manual_seed(0)
    images, labels = two_classes(400, 0)
    heat = (~object_mask()).float()  # the background, exactly
    heats = [heat] * len(images)
    shuffled, fractions = mask_batch(images, heats, 0.5, "shuffle", torch.Generator().manual_seed(1), donors=images)
    meaned, _ = mask_batch(images, heats, 0.5, "mean", torch.Generator().manual_seed(1))
    assert fractions[0] == pytest.approx(0.75)
    assert probe_accuracy(images, labels) > 0.95  # unmasked, the background gives the class away
    assert probe_accuracy(meaned, labels) > 0.9  # the image's mean colour keeps it
    assert probe_accuracy(shuffled, labels) < 0.65  # a random image's region does not
    with pytest.raises(TexplainError, match="shuffle"):
        mask_batch(images[:2], heats[:2], 0.5, "shuffle", torch.Generator())


def test_auto_takes_the_deepest_map_of_eight_cells_or_more():
    torch.manual_seed(0)
    resnet = load_classifier("timm:resnet10t", pretrained=False, num_classes=3)
    pixels = torch.randn(1, 3, 64, 64)
    assert finer_layer(resnet, pixels) == "layer2"  # 8 x 8 at 64 px; layer3 is 4 x 4 and layer4 2 x 2
    assert finer_layer(resnet, torch.randn(1, 3, 256, 256)) == "layer4"  # 8 x 8 at 256 px
    assert cam_layer(resnet, pixels, MaskConfig(heat="gradcam", layer="features")) is None
    assert cam_layer(resnet, pixels, MaskConfig(heat="gradcam", layer="layer3")) == "layer3"
    assert cam_layer(resnet, pixels, MaskConfig(heat="keep", layer="layer3")) is None  # no Grad-CAM, no layer
    with pytest.raises(TexplainError, match="no such module"):
        cam_layer(resnet, pixels, MaskConfig(heat="gradcam", layer="layer9"))


def test_the_class_words_region_is_never_masked():
    """The rock's map covers the climber's cells too; sparing takes the climber's region (a map of any size) out."""
    rock = torch.zeros(4, 4)
    rock[:, :2] = 1.0  # the left half: rock, with the climber on it in the top-left quarter
    climber = torch.zeros(8, 8)
    climber[:4, :4] = 1.0  # the top-left quarter, at twice the resolution
    everywhere = torch.ones(4, 4)
    kept = spare_maps({0: rock, 1: rock, 2: rock}, {0: climber, 1: everywhere}, 0.5)
    assert list(kept) == [0, 2]  # 1's class covers its whole shortcut: nothing left to mask, left out
    expected = rock.clone()
    expected[:2, :2] = 0.0
    assert torch.equal(kept[0], expected) and torch.equal(kept[2], rock)  # 2 says no class word: masked as it was
    assert torch.equal(region(kept[0], (32, 32), 0.5)[:16, :16], torch.zeros(16, 16, dtype=torch.bool))
