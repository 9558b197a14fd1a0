"""What makes translator training fill a GPU, checked on the CPU: batch size auto, the probe step, features, precision."""

from __future__ import annotations

import pytest
import torch

from conftest import CAPTIONS, tiny_vit
from texplain.cli import options
from texplain.data.captions import CaptionPair
from texplain.errors import TexplainError
from texplain.models.config import TranslatorConfig
from texplain.models.features import extract_features
from texplain.models.translator import Translator
from texplain.training import translator_training
from texplain.training.config import Phase, TrainConfig
from texplain.training.replicas import Replicas
from texplain.training.translator_training import (
    CPU_AUTO_BATCH,
    _FeatureBank,
    _micro_batch,
    _probe_step,
    global_batch,
    train_translator,
)
from texplain.weights import load_torch_state


@pytest.fixture()
def setup(tmp_path, images, tiny_lm):
    store, _ = extract_features(tiny_vit(), [str(p) for p in images], tmp_path / "features", progress=False)
    pairs = [CaptionPair(images[i % len(images)], CAPTIONS[i]) for i in range(8)]
    t, d = store.token_shape
    torch.manual_seed(0)
    translator = Translator(TranslatorConfig(in_tokens=t, in_dim=d, lm_dim=tiny_lm.embed_dim, prefix_len=4, hidden=64))
    return store, pairs, translator


def test_auto_batch_on_a_cpu_is_the_default_size_and_is_kept_for_resume(tmp_path, setup, tiny_lm, caplog):
    store, pairs, translator = setup
    pairs = pairs * 10  # 80 pairs: more than one auto batch
    caplog.set_level("INFO", logger=translator_training.__name__)
    train_translator(translator, tiny_lm, store, [Phase("a", pairs, 1)], tmp_path / "out",
                     TrainConfig(batch_size="auto", warmup_steps=1), progress=False)
    assert f"batch size auto: {CPU_AUTO_BATCH} pairs per step" in caplog.text
    state = load_torch_state(tmp_path / "out" / "checkpoint" / "state.pt")
    assert state["batch_size"] == CPU_AUTO_BATCH
    state["batch_size"] = 16  # as if a GPU had chosen 16: a resumed run keeps it
    torch.save(state, tmp_path / "out" / "checkpoint" / "state.pt")
    caplog.clear()
    train_translator(translator, tiny_lm, store, [Phase("a", pairs, 2)], tmp_path / "out",
                     TrainConfig(batch_size="auto", warmup_steps=1), resume=True, progress=False)
    assert "batch size auto: 16 pairs per step" in caplog.text


def test_probe_step_leaves_training_as_it_was(setup, tiny_lm, tmp_path):
    """The step that measures a pair's memory on a GPU: no batch-norm statistics, gradients or random numbers used."""
    store, pairs, translator = setup
    bank = _FeatureBank(store, pairs)
    translator.train()
    before = {k: v.clone() for k, v in translator.state_dict().items()}
    rng = torch.get_rng_state()
    assert _probe_step(translator, tiny_lm, bank, pairs, TrainConfig(), Replicas(0, 1, torch.device("cpu"))) == 8
    assert translator.training
    assert all(torch.equal(v, before[k]) for k, v in translator.state_dict().items())
    assert all(p.grad is None for p in translator.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_batch_from_memory_arithmetic():
    assert _micro_batch(10 * 2**30, 2**20) == 1024  # capped at AUTO_MAX_BATCH
    assert _micro_batch(2**30, 2**20) == 712  # 0.7 GiB of 1 MiB pairs, down to a multiple of 8
    assert _micro_batch(7 * 2**20, 2**20) == 4  # fewer than 8 fit: as many as fit
    with pytest.raises(TexplainError, match="does not fit"):
        _micro_batch(2**20, 2**20)
    assert global_batch(712, world=4, accumulation=2, pairs=10_000) == 5696
    assert global_batch(712, world=1, accumulation=1, pairs=100) == 100


def test_features_come_as_float32_on_the_device(setup):
    store, pairs, _ = setup
    for memory in (4.0, 0.0):  # held in memory, and read from the store per batch
        rows = _FeatureBank(store, pairs, memory).batch(pairs[:3], torch.device("cpu"))
        assert rows.dtype == torch.float32 and rows.shape[0] == 3


def test_precision_stays_float32_on_a_cpu():
    assert Replicas.start("cpu").accelerator is None
    assert Replicas.start("cpu", "bf16").accelerator is None


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("AUTO ", "auto"), ("64", 64), ("1", 1)])
def test_batch_size_option(value, expected):
    assert options.batch_size(value, "--batch-size") == expected


@pytest.mark.parametrize("value", ["0", "-3", "most", "2.5", ""])
def test_bad_batch_size_option_is_one_line(value):
    with pytest.raises(TexplainError, match="--sample-batch"):
        options.batch_size(value, "--sample-batch")


def test_batch_size_config_values():
    with pytest.raises(TexplainError, match="batch_size"):
        TrainConfig(batch_size="most")
    with pytest.raises(TexplainError, match="batch_size"):
        TrainConfig(batch_size=0)
    assert TrainConfig(batch_size="auto", accumulation=4).batch_size == "auto"
