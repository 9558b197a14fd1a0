"""Training: only the translator learns, a tiny one overfits 8 pairs, resume continues, and a seed repeats a run."""

from __future__ import annotations

import torch

from conftest import CAPTIONS, tiny_vit
from texplain.data.captions import CaptionPair
from texplain.models.config import TranslatorConfig
from texplain.models.features import extract_features
from texplain.models.translator import Translator, load_translator
from texplain.training.config import Phase, TrainConfig
from texplain.training.translator_training import fit_translator, train_translator


def _pairs(images) -> list[CaptionPair]:
    """Eight (image, caption) pairs over the test images."""
    return [CaptionPair(images[i % len(images)], CAPTIONS[i]) for i in range(8)]


def _setup(tmp_path, images, lm):
    vit = tiny_vit()
    store, _ = extract_features(vit, [str(p) for p in images], tmp_path / "features", progress=False)
    pairs = _pairs(images)
    t, d = store.token_shape
    translator = Translator(TranslatorConfig(in_tokens=t, in_dim=d, lm_dim=lm.embed_dim, prefix_len=4, hidden=64, dropout=0.0))
    return store, pairs, translator


def test_tiny_translator_overfits_eight_pairs(tmp_path, images, tiny_lm):
    store, pairs, translator = _setup(tmp_path, images, tiny_lm)
    lm_before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    history = train_translator(translator, tiny_lm, store, [Phase("train", pairs, 100, lr=1e-2)], tmp_path / "out",
                               TrainConfig(batch_size=8, warmup_steps=5, seed=0), progress=False)
    losses = [row["train_loss"] for row in history.epochs]
    assert losses[-1] < 0.3 * losses[0]
    assert all(torch.equal(v, lm_before[k]) for k, v in tiny_lm.model.state_dict().items())
    assert load_translator(tmp_path / "out").config == translator.config


def test_resume_matches_an_uninterrupted_run(tmp_path, images, tiny_lm):
    store, pairs, _ = _setup(tmp_path, images, tiny_lm)
    config = TrainConfig(batch_size=4, warmup_steps=2, seed=3)

    def fresh():
        torch.manual_seed(0)
        return _setup(tmp_path, images, tiny_lm)[2]

    full = train_translator(fresh(), tiny_lm, store, [Phase("a", pairs, 2), Phase("b", pairs[:4], 2, lr=1e-4)],
                            tmp_path / "full", config, progress=False)
    train_translator(fresh(), tiny_lm, store, [Phase("a", pairs, 2)], tmp_path / "part", config, progress=False)
    resumed = train_translator(fresh(), tiny_lm, store, [Phase("a", pairs, 2), Phase("b", pairs[:4], 2, lr=1e-4)],
                               tmp_path / "part", config, resume=True, progress=False)
    assert [r["phase"] for r in resumed.epochs] == ["a", "a", "b", "b"]
    assert [round(r["train_loss"], 5) for r in resumed.epochs] == [round(r["train_loss"], 5) for r in full.epochs]


def test_the_same_seed_trains_the_same_translator(tmp_path, images, tiny_lm):
    vit, pairs = tiny_vit(), _pairs(images)

    def fit(name: str, seed: int, drawn_before: int) -> dict:
        torch.rand(drawn_before)  # whatever drew from torch's generator before must not matter
        settings = {"prefix_len": 4, "hidden": 32}
        translator, _ = fit_translator(vit, tiny_lm, [Phase("train", pairs, 1)], tmp_path / name, settings,
                                       TrainConfig(batch_size=4, warmup_steps=1, seed=seed), features=tmp_path / "features",
                                       progress=False)
        return translator.state_dict()

    first, again, other = fit("a", 0, 1), fit("b", 0, 7), fit("c", 1, 1)
    assert all(torch.equal(v, again[k]) for k, v in first.items())
    assert not all(torch.equal(v, other[k]) for k, v in first.items())
