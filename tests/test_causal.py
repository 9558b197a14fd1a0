"""The causal check on a world built for it: a blue patch carries "water", so masking the patch lowers "water".

The classifier is a hand-set colour detector on a 4 x 4 grid, so its feature
map says exactly where the blue is; a translator trained for a few seconds
on the tiny caption LM learns "blue patch → a sentence about water" and
"no patch → a sentence about a road". Masking the word's Grad-CAM region
(the patch) must lower "water" far more than the same mask turned by 180
degrees (an empty corner).
"""

from __future__ import annotations

import torch
from torch import nn

from texplain.data.captions import CaptionPair
from texplain.evaluation.causal import causal_check
from texplain.generate.explain import ExplainConfig, explain_features
from texplain.generate.sampling import SamplingConfig
from texplain.generate.words import WordConfig
from texplain.models.classifiers import Classifier
from texplain.models.translator import new_translator
from texplain.training.translator_training import Phase, TrainConfig, train_translator

SIZE = 32


class ColourGrid(nn.Module):
    """Pixels (B, 3, 32, 32) → a 4 x 4 map of [blueness, redness] → two logits; hand-set, nothing learned.

    Grey gives zero in both channels, so the feature map is non-zero only where the patch is.
    """

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(SIZE // 4)
        self.colour = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.colour.weight.copy_(torch.tensor([[-1.0, -1.0, 2.0], [2.0, -1.0, -1.0]])[:, :, None, None])
            self.colour.bias.zero_()
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x):
        grid = self.act(self.colour(self.pool(x)))  # (B, 2, 4, 4)
        return self.head(grid.mean(dim=(2, 3)))  # (B, 2)


def picture(patch: bool) -> torch.Tensor:
    """A grey picture (3, 32, 32), with a blue 8 x 8 patch in the top-left cell when ``patch``."""
    image = torch.full((3, SIZE, SIZE), 0.5)
    if patch:
        image[:, :8, :8] = torch.tensor([0.0, 0.1, 1.0])[:, None, None]
    return image


class Store:
    """The features of the two kinds of picture, served as a feature store is to training."""

    def __init__(self, classifier: Classifier):
        self.folder = "in-memory"
        with torch.no_grad():
            features, _ = classifier.features_and_logits(torch.stack([picture(True), picture(False)]))
        self.rows = {"patch": features[0], "plain": features[1]}

    def __contains__(self, path) -> bool:
        return str(path) in self.rows

    def load_all(self, paths):
        return torch.stack([self.rows[str(p)] for p in paths])

    def nbytes(self, images: int) -> int:
        return images * self.rows["patch"].numel() * 4


def test_masking_the_words_region_lowers_it_more_than_the_rotated_control(tiny_lm, tmp_path):
    torch.manual_seed(0)
    classifier = Classifier(ColourGrid(), lambda image: image, ["class_a", "class_b"], "colour-grid", "act")
    pairs = [CaptionPair("patch", "two fish swimming in blue water")] * 32 + [CaptionPair("plain", "a car driving on a wet road")] * 32
    store = Store(classifier)
    translator = new_translator(classifier, tiny_lm, tuple(store.rows["patch"].shape), prefix_len=4, hidden=32)
    train_translator(translator, tiny_lm, store, [Phase("train", pairs, 30, lr=3e-3)], tmp_path,
                     TrainConfig(batch_size=16, warmup_steps=5), progress=False)
    config = ExplainConfig(sampling=SamplingConfig(num_samples=40, min_words=3, max_words=8, batch_size=40, seed=1),
                           words=WordConfig(top_k=10))
    pixels = picture(True)[None]
    explanation = explain_features(translator, tiny_lm, classifier.features_and_logits(pixels)[0][0], config)
    result = causal_check(classifier, translator, tiny_lm, "patch.png", pixels, explanation, config, threshold=0.5)
    assert result is not None and result.word in {"water", "fish", "blue", "swim"}
    frequency = result.word_frequency
    assert frequency["original"] >= 0.5  # the patch's words dominate its explanation
    assert 0 < result.masked_fraction <= 0.25  # the mask is the patch's corner, not the picture
    drop, control_drop = frequency["original"] - frequency["masked"], frequency["original"] - frequency["control"]
    assert drop >= 0.4 and drop > control_drop + 0.3, result.to_json()
