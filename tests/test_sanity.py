"""Sanity checks: cascade order and weight randomisation, rank correlations, pairing, seeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import tiny_vit
from texplain.evaluation.sanity import (
    ROOT_STAGE,
    cascade_stages,
    derangement,
    mean_correlation,
    randomisation_cascade,
    randomise_,
    rank_correlation,
    same_seed_identical,
    shuffled_pairing,
    stage_parameters,
)
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.explain import explain_features
from texplain.models.config import TranslatorConfig
from texplain.models.translator import Translator
from texplain.text.config import WordConfig

VIT_PIXELS = (1, 3, 160, 160)


def test_rank_correlation_by_hand():
    a = {"dog": 0.9, "grass": 0.5, "ball": 0.1}
    assert rank_correlation(a, {"dog": 0.8, "grass": 0.6, "ball": 0.2}) == pytest.approx((1.0, 1.0))
    assert rank_correlation(a, {"ball": 0.8, "grass": 0.6, "dog": 0.2}) == pytest.approx((-1.0, -1.0))
    # union x, y, z: a = (.5, .3, 0), b = (0, .4, .2); rank differences 2, -1, -1 → 1 - 6*6/(3*8) = -0.5;
    # pairs: (x, y) and (x, z) discordant, (y, z) concordant → (1 - 2) / 3
    spearman, kendall = rank_correlation({"x": 0.5, "y": 0.3}, {"y": 0.4, "z": 0.2})
    assert spearman == pytest.approx(-0.5) and kendall == pytest.approx(-1 / 3)
    assert all(math.isnan(v) for v in rank_correlation({"x": 0.5}, {"x": 0.4}))
    # only the top k of each side form the union
    assert rank_correlation({"p": 3, "q": 2, "r": 1}, {"p": 3, "q": 2, "r": 9}, k=2) == pytest.approx((1.0, 1.0))


def test_derangement_has_no_fixed_point_and_is_seeded():
    for n in (2, 3, 10):
        order = derangement(n, seed=4)
        assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
        assert order == derangement(n, seed=4)


def test_cascade_stages_run_from_the_head_down():
    classifier = tiny_vit()
    stages = cascade_stages(classifier.module, torch.zeros(VIT_PIXELS))
    assert stages == ["head", "norm", *[f"blocks.{i}" for i in range(5, -1, -1)], "patch_embed", ROOT_STAGE]
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert cascade_stages(cnn, torch.zeros(1, 3, 8, 8)) == ["4", "2", "0"]


def test_randomisation_changes_exactly_the_stages_so_far_from_the_top_down():
    module = tiny_vit().module
    original = {name: p.detach().clone() for name, p in module.named_parameters()}
    stages = cascade_stages(module, torch.zeros(VIT_PIXELS))
    owner = {}
    for stage in stages:
        for p in stage_parameters(module, stage):
            owner[id(p)] = stage
    assert len(owner) == len(original)  # every parameter belongs to exactly one stage
    generator = torch.Generator().manual_seed(0)
    for step, stage in enumerate(stages):
        randomise_(stage_parameters(module, stage), generator)
        done = set(stages[: step + 1])
        for name, p in module.named_parameters():
            changed = not torch.equal(p, original[name])
            assert changed == (owner[id(p)] in done), (stage, name)


def test_randomise_keeps_the_scale_of_each_tensor():
    weight = nn.Parameter(torch.randn(200, 300) * 3.0 + 1.0)
    bias = nn.Parameter(torch.zeros(300))
    randomise_([weight, bias], torch.Generator().manual_seed(0))
    values = weight.detach()
    assert float(values.mean()) == pytest.approx(1.0, abs=0.05) and float(values.std()) == pytest.approx(3.0, rel=0.05)
    assert float(bias.detach().std()) == pytest.approx(0.02, rel=0.2)


@pytest.fixture(scope="module")
def vit_setup(tiny_lm):
    """A tiny ViT, a fresh translator onto the tiny LM, two images, and explanation settings."""
    classifier = tiny_vit()
    torch.manual_seed(0)
    translator = Translator(TranslatorConfig(in_tokens=101, in_dim=64, lm_dim=tiny_lm.embed_dim, prefix_len=4, hidden=32)).eval()
    pixels = torch.randn(2, *VIT_PIXELS[1:])
    config = ExplainConfig(sampling=SamplingConfig(num_samples=12, min_words=2, max_words=8, batch_size=12, seed=0),
                           words=WordConfig(top_k=10), word_cloud=False)
    return classifier, translator, pixels, config


def test_cascade_leaves_the_classifier_alone_and_reports_every_stage(tiny_lm, vit_setup):
    classifier, translator, pixels, config = vit_setup
    before = {n: p.clone() for n, p in classifier.module.state_dict().items()}
    with torch.no_grad():
        features, _ = classifier.features_and_logits(pixels)
    reference = [explain_features(translator, tiny_lm, f, config) for f in features]
    steps = randomisation_cascade(classifier, translator, tiny_lm, pixels, reference, config, k=10, seed=0)
    assert [s.stage for s in steps] == cascade_stages(classifier.module, pixels)
    head = steps[0]
    assert head.stage == "head" and not head.features_changed and head.spearman == pytest.approx(1.0)
    assert all(s.features_changed for s in steps[1:])
    assert all(torch.equal(before[n], p) for n, p in classifier.module.state_dict().items())
    assert set(steps[-1].to_json()) == {"stage", "features_changed", "spearman", "kendall", "images"}


def test_same_seed_and_pairing(tiny_lm, vit_setup):
    classifier, translator, pixels, config = vit_setup
    with torch.no_grad():
        features, _ = classifier.features_and_logits(pixels)
    assert same_seed_identical(translator, tiny_lm, features[0], config)
    explanation = explain_features(translator, tiny_lm, features[0], config)
    assert shuffled_pairing([explanation, explanation], [1, 0])["spearman"] == pytest.approx(1.0)
    assert mean_correlation([])["images"] == 0
