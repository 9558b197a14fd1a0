"""Pretraining the small caption LM: it learns, saves an ordinary HF folder, and reloads exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch

from texplain.models import caption_lm
from texplain.errors import TexplainError
from texplain.generate.sampling import SamplingConfig, sample_sentences
from texplain.models.caption_lm import METADATA_FILE, CaptionLMConfig, pretrain_caption_lm
from texplain.models.lm import load_lm

SUBJECTS = ["a dog", "a black dog", "two children", "a man in a red shirt", "a girl"]
ACTIONS = ["runs on the grass", "jumps over a log", "plays in the water", "sits on a bench", "climbs a rock"]
CAPTIONS = [f"{s} {a} ." for s in SUBJECTS for a in ACTIONS] * 2  # 50 repetitive captions

TINY = dict(n_layer=1, n_embd=32, n_head=2, n_positions=32, vocab_size=400, max_tokens=24, batch_size=8, lr=1e-2, epochs=12)


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
        out = pretrain_caption_lm(CAPTIONS, tmp_path_factory.mktemp("lm") / "caption-lm", CaptionLMConfig(**TINY), progress=False)
    finally:
        caption_lm._save = original
    return out, saved["model"]


def bos_prefix_loss(lm, captions: list[str]) -> float:
    """Caption loss after the end-of-sentence embedding as a one-position prefix (the pretraining setting)."""
    ids, mask = lm.tokenize_captions(captions)
    prefix = lm.embed_tokens(torch.full((len(captions), 1), lm.eos_token_id))
    with torch.inference_mode():
        return float(lm.caption_loss(prefix, ids, mask))


def test_pretraining_lowers_the_loss_well_below_its_start(trained) -> None:
    out, _ = trained
    metadata = json.loads((out / METADATA_FILE).read_text())
    lm = load_lm(str(out))
    start = math.log(len(lm.tokenizer))  # a freshly initialised model is close to uniform
    assert metadata["train_loss"] < 0.5 * start
    assert metadata["dev_loss"] is not None and metadata["dev_loss"] < 0.5 * start
    assert bos_prefix_loss(lm, CAPTIONS) < 0.5 * start
    assert metadata["config"]["n_embd"] == 32 and metadata["train_captions"] + metadata["dev_captions"] == 50


def test_folder_reloads_with_identical_logits(trained) -> None:
    out, model = trained
    lm = load_lm(str(out))
    ids = lm.tokenizer(CAPTIONS[:4], add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, lm.model(input_ids=ids).logits)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", METADATA_FILE, "tokenizer.json", "tokenizer_config.json"]
    )
    assert not out.with_name(out.name + ".tmp").exists()


def test_tokenizer_marks_word_starts_and_ends_sentences(trained) -> None:
    lm = load_lm(str(trained[0]))
    tokenizer = lm.tokenizer
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == tokenizer.bos_token_id == lm.eos_token_id
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a black dog runs", add_special_tokens=False)["input_ids"])
    assert tokens[0] == "a" and all(t.startswith("\u0120") for t in tokens[1:])
    assert tokenizer.decode(tokenizer("a black dog runs .")["input_ids"]) == "a black dog runs ."


def test_sampling_from_the_small_lm(trained) -> None:
    lm = load_lm(str(trained[0]))
    prefix = lm.embed_tokens(torch.tensor([lm.eos_token_id])).detach()
    sentences = sample_sentences(lm, prefix, SamplingConfig(num_samples=20, min_words=3, max_words=12, batch_size=10))
    assert len(sentences) == 20
    assert sum(any(s.startswith(subject) for subject in SUBJECTS) for s in sentences) >= 10


def test_existing_folder_is_replaced_only_if_it_is_a_small_lm(tmp_path) -> None:
    config = CaptionLMConfig(**{**TINY, "epochs": 1})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with pytest.raises(TexplainError, match="not a caption LM folder"):
        pretrain_caption_lm(CAPTIONS, foreign, config, progress=False)
    out = pretrain_caption_lm(CAPTIONS, tmp_path / "lm", config, progress=False)
    again = pretrain_caption_lm(CAPTIONS[:20], out, config, progress=False)
    assert json.loads((again / METADATA_FILE).read_text())["train_captions"] + 1 == 20


def test_only_captions_of_one_group_are_joined(tmp_path) -> None:
    groups = [["a b .", "c d .", "e f ."], ["g h ."]]
    assert caption_lm._join_pairs(groups, CaptionLMConfig(join_next=1.0)) == ["a b . c d .", "c d . e f .", "e f .", "g h ."]
    assert caption_lm._join_pairs(groups, CaptionLMConfig(join_next=0.0)) == ["a b .", "c d .", "e f .", "g h ."]
    grouped = [CAPTIONS[i : i + 5] for i in range(0, 50, 5)]
    out = pretrain_caption_lm(grouped, tmp_path / "lm", CaptionLMConfig(**{**TINY, "epochs": 1}), progress=False)
    metadata = json.loads((out / METADATA_FILE).read_text())
    assert metadata["train_captions"] + metadata["dev_captions"] == 50


@pytest.mark.parametrize(
    "kwargs",
    [{"n_head": 3}, {"vocab_size": 100}, {"max_tokens": 200}, {"epochs": 0}, {"lr": 0.0}, {"dev_fraction": 0.6},
     {"join_next": 1.5}],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(TexplainError):
        CaptionLMConfig(**kwargs)
