"""Streamed caption sets: what is read from WebDataset tars and Hugging Face Arrow files, and how processes share them."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from texplain.data.caption_shards import is_caption_shards, open_caption_shards
from texplain.errors import TexplainError


def tar_of(path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for suffix, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def test_tar_samples_their_captions_and_the_processes_shares(tmp_path):
    pytest.importorskip("webdataset", reason="the distributed extra (webdataset) is not installed")
    for shard in range(3):
        tar_of(tmp_path / f"{shard:03d}.tar", {
            f"{shard}a": {"jpg": b"image", "txt": b" a dog on the grass \n"},
            f"{shard}b": {"png": b"image", "json": json.dumps({"captions": ["one", "two"]}).encode()},
            f"{shard}c": {"jpg": b"image"},  # no caption: skipped
        })
    assert is_caption_shards(tmp_path) and is_caption_shards(str(tmp_path / "{000..002}.tar"))
    assert not is_caption_shards(tmp_path / "captions.tsv")
    stream = open_caption_shards(str(tmp_path / "{000..002}.tar"))
    samples = list(stream.samples())
    assert [s.key.rsplit("/", 2)[-2:] for s in samples][:2] == [["000.tar", "0a"], ["000.tar", "0b"]]
    assert [s.captions for s in samples[:2]] == [("a dog on the grass",), ("one", "two")]
    assert len(samples) == 6 and [s.position for s in samples[:2]] == [0, 1]
    shares = [[s.key for s in stream.samples(rank, 2)] for rank in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(s.key for s in samples) and not set(shares[0]) & set(shares[1])
    assert {k.split("/")[-2] for k in shares[0]} == {"000.tar", "002.tar"}  # whole shards per process
    limited = open_caption_shards(tmp_path, limit=3)
    assert [s.key for r in range(2) for s in limited.samples(r, 2)] == [samples[i].key for i in (0, 2, 1)]


def test_a_missing_shard_is_named(tmp_path):
    pytest.importorskip("webdataset", reason="the distributed extra (webdataset) is not installed")
    tar_of(tmp_path / "000.tar", {"a": {"jpg": b"x", "txt": b"y"}})
    with pytest.raises(TexplainError, match="001.tar: no such WebDataset shard"):
        open_caption_shards(str(tmp_path / "{000..001}.tar"))


def test_a_saved_hugging_face_dataset_is_read_by_split(tmp_path):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"image": [{"bytes": b"jpeg bytes", "path": None}] * 3, "text": ["first", "second", "third"]})
    for split in ("train", "validation"):
        (tmp_path / "set" / split).mkdir(parents=True)
        with pa.ipc.new_stream(str(tmp_path / "set" / split / "data-00000-of-00001.arrow"), table.schema) as writer:
            writer.write_table(table)  # the stream layout save_to_disk writes
    stream = open_caption_shards(tmp_path / "set", split="validation")
    assert stream.kind == "arrow" and len(stream.shards) == 1 and "validation" in stream.shards[0]
    assert [(s.image, s.captions) for s in stream.samples()] == [(b"jpeg bytes", (c,)) for c in ("first", "second", "third")]
    with pytest.raises(TexplainError, match="no files of split 'test'"):
        open_caption_shards(tmp_path / "set", split="test")
