"""Pretraining the caption LM: it learns, reads its context, records its recipe, saves and reloads exactly."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from texplain.errors import TexplainError
from texplain.generate.config import SamplingConfig
from texplain.generate.sampling import sample_sentences
from texplain.models.lm import load_lm
from texplain.training import caption_lm
from texplain.training.caption_lm import METADATA_FILE, pretrain_caption_lm
from texplain.training.config import CaptionLMConfig, ContextRecipe

SUBJECTS = ["a dog", "a black dog", "two children", "a man in a red shirt", "a girl", "a cat", "a bird", "a boy"]
ACTIONS = ["runs on the grass", "jumps in the water", "sits on a bench", "climbs a rock", "plays in the snow", "rides a bike"]


def groups(n: int = 240, seed: int = 0) -> list[list[str]]:
    """Images of one subject doing one thing, three captions each, worded differently."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        subject, action = rng.choice(SUBJECTS), rng.choice(ACTIONS)
        out.append([f"{subject} {action} .", f"{subject} {action} outside .", f"here {subject} {action} today ."])
    return out


TINY = dict(n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=400, max_tokens=24, batch_size=32, lr=5e-3,
            epochs=6, dev_fraction=0.1, context=ContextRecipe(slots=4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Pretrain once for the module; keep the in-memory model that was saved."""
    saved = {}
    original = caption_lm._save

    def spy(model, tokenizer, metadata, out_dir):
        saved["model"] = model
        original(model, tokenizer, metadata, out_dir)

    caption_lm._save = spy
    try:
        out = pretrain_caption_lm(groups(), tmp_path_factory.mktemp("lm") / "caption-lm", CaptionLMConfig(**TINY), progress=False)
    finally:
        caption_lm._save = original
    return out, saved["model"]


def test_pretraining_lowers_the_loss_well_below_its_start(trained) -> None:
    out, _ = trained
    metadata = json.loads((out / METADATA_FILE).read_text())
    start = math.log(len(load_lm(str(out)).tokenizer))  # a freshly initialised model is close to uniform
    assert metadata["train_loss"] < 0.5 * start and metadata["dev_loss"] < 0.5 * start
    assert metadata["train_captions"] + metadata["dev_captions"] == 720 and metadata["dev_captions"] == 72  # 24 images


def test_the_lm_writes_about_its_context(trained) -> None:
    """Held-out images: the right words as context lower the caption loss far below no context and another image's."""
    metadata = json.loads((trained[0] / METADATA_FILE).read_text())
    none, right, wrong = metadata["dev_loss"], metadata["dev_loss_context"], metadata["dev_loss_wrong_context"]
    assert right < 0.7 * none, metadata
    assert right < wrong, metadata


def test_the_recipe_is_in_the_folders_config(trained) -> None:
    lm = load_lm(str(trained[0]))
    assert lm.recipe == {"format": "word-slots", "slots": 4, "start": "eos"}
    assert json.loads((trained[0] / "config.json").read_text())["texplain_recipe"]["slots"] == 4


def test_folder_reloads_with_identical_logits(trained) -> None:
    out, model = trained
    lm = load_lm(str(out))
    ids = lm.tokenizer(["a dog runs on the grass ."], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, lm.model(input_ids=ids).logits)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", METADATA_FILE, "tokenizer.json", "tokenizer_config.json"]
    )
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_tokenizer_marks_word_starts_and_ends_sentences(trained) -> None:
    tokenizer = load_lm(str(trained[0])).tokenizer
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == tokenizer.bos_token_id
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a black dog runs", add_special_tokens=False)["input_ids"])
    assert tokens[0] == "a" and all(t.startswith("\u0120") for t in tokens[1:])


def test_sampling_after_the_empty_context(trained) -> None:
    lm = load_lm(str(trained[0]))
    prefix = lm.embed_tokens(torch.tensor([lm.eos_token_id] * 5)).detach()  # four null slots and the start token
    sentences = sample_sentences(lm, prefix, SamplingConfig(num_samples=20, min_words=3, max_words=12, batch_size=10))
    assert len(sentences) == 20
    assert sum(any(s.startswith(subject) or s.startswith("here") for subject in SUBJECTS) for s in sentences) >= 10


def test_an_lm_without_context_is_the_old_recipe(tmp_path) -> None:
    config = CaptionLMConfig(**{**TINY, "epochs": 2, "context": ContextRecipe(slots=0)})
    out = pretrain_caption_lm(groups(60), tmp_path / "lm", config, progress=False)
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["dev_loss"] == metadata["dev_loss_context"]  # it reads no context at all
    assert load_lm(str(out)).recipe is None


def test_existing_folder_is_replaced_only_if_it_is_a_caption_lm(tmp_path) -> None:
    config = CaptionLMConfig(**{**TINY, "epochs": 1})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(TexplainError, match="not a caption LM folder"):
        pretrain_caption_lm(groups(20), foreign, config, progress=False)
    out = pretrain_caption_lm(groups(20), tmp_path / "lm", config, progress=False)
    again = pretrain_caption_lm(groups(10), out, config, progress=False)
    assert json.loads((again / METADATA_FILE).read_text())["train_captions"] == 27  # 9 images of 3, one held out


@pytest.mark.parametrize(
    "kwargs",
    [{"n_head": 3}, {"vocab_size": 100}, {"max_tokens": 200}, {"epochs": 0}, {"lr": 0.0}, {"dev_fraction": 0.6},
     {"context": ContextRecipe(slots=120)}],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(TexplainError):
        CaptionLMConfig(**kwargs)
