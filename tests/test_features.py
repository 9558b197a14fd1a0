"""The feature store: extract once, reuse, skip bad images, refuse a mixed store."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from conftest import tiny_vit
from texplain.errors import TexplainError
from texplain.models.config import ExtractionConfig
from texplain.models.features import FeatureStore, ImageItem, extract_features, extract_into, open_store


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
    rows_before = json.loads((tmp_path / "f" / "shard_00000.rows.json").read_text())
    store, _ = extract_features(vit, paths, tmp_path / "f", progress=False)
    assert len(store) == 8
    assert json.loads((tmp_path / "f" / "shard_00000.rows.json").read_text()) == rows_before
    assert len(list((tmp_path / "f").glob("shard_*.safetensors"))) == 2
    assert [r["shard"] for r in map(store.row, paths)] == ["shard_00000"] * 3 + ["shard_00001"] * 5


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


def test_a_store_with_a_legacy_index_is_read_and_extended(tmp_path, images):
    """Stores written before shards carried their rows list them all in index.json; they still work."""
    vit = tiny_vit()
    paths = [str(p) for p in images]
    extract_features(vit, paths[:3], tmp_path / "f", progress=False)
    folder = tmp_path / "f"
    rows = json.loads((folder / "shard_00000.rows.json").read_text())
    (folder / "index.json").write_text(json.dumps([dict(r, shard=0) for r in rows]))
    (folder / "shard_00000.rows.json").unlink()
    store, _ = extract_features(vit, paths, folder, progress=False)
    assert len(store) == 8 and store.row(paths[0])["shard"] == 0 and store.row(paths[5])["shard"] == "shard_00001"
    assert torch.allclose(FeatureStore(folder).features(paths[:1]), store.features(paths[:1]))


def test_writers_add_to_one_store_without_touching_each_other(tmp_path, images):
    vit = tiny_vit()
    paths = [str(p) for p in images]
    first, second = open_store(tmp_path / "f", vit), open_store(tmp_path / "f", vit)
    extract_into(first, vit, [ImageItem(p) for p in paths[0::2]], ExtractionConfig(shard_size=2), writer="a", progress=False)
    extract_into(second, vit, [ImageItem(p) for p in paths[1::2]], ExtractionConfig(shard_size=2), writer="b", progress=False)
    names = sorted(f.name for f in (tmp_path / "f").glob("*.safetensors"))
    assert names == ["shard_a_00000.safetensors", "shard_a_00001.safetensors",
                     "shard_b_00000.safetensors", "shard_b_00001.safetensors"]
    store = FeatureStore(tmp_path / "f")
    assert sorted(store.paths) == sorted(paths)
    assert torch.allclose(store.load_all(paths), extract_features(vit, paths, tmp_path / "g", progress=False)[0].load_all(paths))


def test_images_read_before_a_broken_stream_are_kept(tmp_path, images):
    """A stream that fails (a corrupt WebDataset shard) still leaves what it gave in the store."""
    vit = tiny_vit()

    def stream():
        for path in images[:3]:
            yield ImageItem(f"set/{path.name}", {"captions": ["a caption"]}, path.read_bytes())
        raise TexplainError("shard 2: corrupt")

    store = open_store(tmp_path / "f", vit)
    with pytest.raises(TexplainError, match="corrupt"):
        extract_into(store, vit, stream(), ExtractionConfig(shard_size=64), progress=False)
    reopened = FeatureStore(tmp_path / "f")
    assert len(reopened) == 3 and reopened.row(f"set/{images[0].name}")["captions"] == ["a caption"]
    expected, _ = extract_features(vit, [str(images[0])], tmp_path / "g", progress=False)
    assert torch.allclose(reopened.features([f"set/{images[0].name}"]), expected.features([str(images[0])]))
