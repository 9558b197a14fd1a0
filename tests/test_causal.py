"""The causal check on a world built for it: a blue patch carries "two fish", so masking the patch lowers it.

The classifier is a hand-set colour detector on a 4 x 4 grid, so its feature
map says exactly where the blue is; a translator trained for a few seconds
on the tiny caption LM learns "blue patch → two fish" and "no patch → a
sentence about a road". Masking the word's region (the patch), found by
keeping each window alone (the default) or by the word's Grad-CAM, must
lower the word far more than the same mask turned by 180 degrees (an empty
corner). The patch's caption is the opening of one the LM was pretrained on
("two fish swimming in blue water"), so the LM continues it the same way on
any machine, and its words open the sentence: a word's Grad-CAM scores the
word at a caption's opening (``gradcam.DEFAULT_TEMPLATES``), and a word the
LM only ever writes mid-sentence ("water") is made *less* likely there by the
patch, which gives an all-zero map and nothing to mask (a caption "blue
water" taught some builds of the tiny LM "a the water").
"""

from __future__ import annotations

import pytest
import torch

from colour_world import BLUE, GREY, SIZE, colour_grid, train_words
from texplain.evaluation.causal import causal_check
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.explain import explain_features
from texplain.mitigation.config import MaskConfig
from texplain.text.config import WordConfig


def picture(patch: bool) -> torch.Tensor:
    """A grey picture (3, 32, 32), with a blue 8 x 8 patch in the top-left cell when ``patch``."""
    image = torch.full((3, SIZE, SIZE), GREY)
    if patch:
        image[:, :8, :8] = BLUE
    return image


@pytest.mark.parametrize("mask", [MaskConfig(fill="mean"), MaskConfig(fill="mean", heat="gradcam", layer="features")],
                         ids=["keep", "gradcam"])
def test_masking_the_words_region_lowers_it_more_than_the_rotated_control(tiny_lm, tmp_path, mask):
    classifier = colour_grid()
    translator = train_words(classifier, tiny_lm, {"patch": (picture(True), "two fish"),
                                                   "plain": (picture(False), "a car driving on a wet road")}, tmp_path)
    config = ExplainConfig(sampling=SamplingConfig(num_samples=40, min_words=3, max_words=8, batch_size=40, seed=1),
                           words=WordConfig(top_k=10))
    pixels = picture(True)[None]
    explanation = explain_features(translator, tiny_lm, classifier.features_and_logits(pixels)[0][0], config)
    result = causal_check(classifier, translator, tiny_lm, "patch.png", pixels, explanation, config, mask)
    assert result is not None and result.word in {"two", "fish"}
    frequency = result.word_frequency
    assert frequency["original"] >= 0.5  # the patch's words dominate its explanation
    assert 0 < result.masked_fraction <= 0.25  # the mask is the patch's corner, not the picture
    drop, control_drop = frequency["original"] - frequency["masked"], frequency["original"] - frequency["control"]
    assert drop >= 0.4 and drop > control_drop + 0.3, result.to_json()
