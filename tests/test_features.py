"""The feature store: extract once, reuse, skip bad images, refuse a mixed store."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import tiny_vit
from texplain.errors import TexplainError
from texplain.models.features import ExtractionConfig, FeatureStore, extract_features


def test_extract_and_read_back(tmp_path, images):
    vit = tiny_vit()
    paths = [str(p) for p in images]
    store, skipped = extract_features(vit, paths, tmp_path / "f", ExtractionConfig(batch_size=4, shard_size=4),
                                      metadata={paths[0]: {"label": "cat"}}, progress=False)
    assert skipped == [] and len(store) == 8
    assert len(list((tmp_path / "f").glob("shard_*.safetensors"))) == 2
    expected, logits = vit.features_and_logits(torch.stack([vit.preprocess(Image.open(p).convert("RGB")) for p in paths]))
    assert torch.allclose(store.features(paths), expected, atol=1e-5)
    assert torch.allclose(store.load_all(paths[::-1]), expected.flip(0), atol=1e-5)
    row = store.row(paths[0])
    assert row["label"] == "cat" and row["top5"][0]["index"] == int(logits[0].argmax())
    assert store.token_shape == tuple(expected.shape[1:])


def test_second_run_extracts_only_new_images(tmp_path, images):
    vit = tiny_vit()
    paths = [str(p) for p in images]
    extract_features(vit, paths[:3], tmp_path / "f", progress=False)
    index_before = json.loads((tmp_path / "f" / "index.json").read_text())
    store, _ = extract_features(vit, paths, tmp_path / "f", progress=False)
    assert len(store) == 8
    assert json.loads((tmp_path / "f" / "index.json").read_text())[:3] == index_before
    assert len(list((tmp_path / "f").glob("shard_*.safetensors"))) == 2


def test_bad_image_is_skipped_and_reported(tmp_path, images):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    store, skipped = extract_features(tiny_vit(), [str(images[0]), str(bad)], tmp_path / "f", progress=False)
    assert len(store) == 1
    assert skipped[0][0] == str(bad) and "broken.jpg" in skipped[0][1]


def test_store_from_another_classifier_is_refused(tmp_path, images):
    extract_features(tiny_vit(), [str(images[0])], tmp_path / "f", progress=False)
    with pytest.raises(TexplainError, match="fp16"):
        extract_features(tiny_vit(), [str(images[0])], tmp_path / "f", ExtractionConfig(fp16=True), progress=False)
    with pytest.raises(TexplainError, match="not a feature store"):
        FeatureStore(tmp_path)


def test_fp16_store(tmp_path, images):
    store, _ = extract_features(tiny_vit(), [str(images[0])], tmp_path / "f", ExtractionConfig(fp16=True), progress=False)
    assert store.load_all([str(images[0])]).dtype == torch.float16
    assert store.features([str(images[0])]).dtype == torch.float32
