"""Training beyond one process: two gloo processes train as one does, resume across process counts, and streamed
caption sets (a WebDataset shard, a Parquet file) go through the feature store into training."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from conftest import CAPTIONS, tiny_vit
from texplain.cli import main
from texplain.models.classifiers import save_classifier
from texplain.models.features import FeatureStore
from texplain.models.translator import load_translator

pytestmark = pytest.mark.distributed
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def assets(tmp_path_factory, images, tiny_lm_folder) -> dict:
    """A saved tiny classifier, the tiny LM and 16 (image, caption) pairs: two steps of 8 per epoch."""
    folder = tmp_path_factory.mktemp("distributed")
    save_classifier(tiny_vit(), folder / "classifier")
    lines = [{"image": str(path), "caption": CAPTIONS[(i + k) % len(CAPTIONS)], "split": "train"}
             for i, path in enumerate(images) for k in range(2)]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    return {"classifier": str(folder / "classifier"), "lm": str(tiny_lm_folder), "captions": str(folder / "captions.jsonl")}


def train_args(assets: dict, out: Path, *more: str, finetune: bool = True) -> list[str]:
    args = ["train", "--classifier", assets["classifier"], "--lm", assets["lm"], "--captions", assets["captions"],
            "--out", str(out), "--epochs", "2", "--batch-size", "8", "--accumulation", "2", "--hidden", "32",
            "--dropout", "0", "--dev-split", "", "--seed", "0"]
    if finetune:
        args += ["--finetune-captions", assets["captions"], "--finetune-epochs", "2", "--finetune-lr", "1e-3"]
    return args + list(more)


def launch(processes: int, args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m texplain ARGS`` on CPUs (gloo), with this checkout's code."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "texplain", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def losses(out: Path) -> list[float]:
    return [row["train_loss"] for row in json.loads((out / "history.json").read_text())["epochs"]]


def test_two_processes_resume_a_one_process_run_and_train_as_it_would(assets, tmp_path):
    """1 process trains phase 1; 2 processes (own feature store, extracted in two shares) resume it and train
    phase 2 with the same global batch: the losses and weights are those of one uninterrupted process."""
    torch.manual_seed(0)  # the same initial translator for both
    assert main(train_args(assets, tmp_path / "full")) == 0
    torch.manual_seed(0)
    assert main(train_args(assets, tmp_path / "run", finetune=False)) == 0
    run = launch(2, train_args(assets, tmp_path / "run", "--resume", "--features", str(tmp_path / "shared")))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("translator written to") == 1  # the main process reports, once
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "full"), rel=1e-4)
    assert len(losses(tmp_path / "run")) == 4
    store = FeatureStore(tmp_path / "shared")
    assert len(store) == 8 and {row["shard"] for row in store.rows.values()} == {"shard_p0_00000", "shard_p1_00000"}
    # The same translator: the same prefixes. (Not every weight: a bias before batch norm has no gradient but
    # rounding noise, which Adam turns into steps; the batch norm takes it out again.)
    features = store.load_all(store.paths)
    with torch.no_grad():
        expected, got = load_translator(tmp_path / "full")(features), load_translator(tmp_path / "run")(features)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def write_shard(path: Path, images: list[Path], corrupt_image: int | None = None) -> list[str]:
    """A WebDataset tar as img2dataset writes it: <key>.jpg, <key>.txt and <key>.json per sample; returns the keys."""
    keys = []
    with tarfile.open(path, "w") as tar:
        for i, image in enumerate(images):
            key = f"{i:09d}"
            data = b"not a jpeg" if i == corrupt_image else _jpeg(image)
            for suffix, payload in (("jpg", data), ("txt", CAPTIONS[i % len(CAPTIONS)].encode()),
                                    ("json", json.dumps({"key": key, "status": "success"}).encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            keys.append(key)
    return keys


def _jpeg(path: Path) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_webdataset_shard_streams_into_training(assets, images, tmp_path, caplog):
    pytest.importorskip("webdataset", reason="the distributed extra (webdataset) is not installed")
    keys = write_shard(tmp_path / "shard-000.tar", images, corrupt_image=3)
    args = ["train", "--classifier", assets["classifier"], "--lm", assets["lm"], "--captions", str(tmp_path),
            "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4", "--hidden", "32", "--dev-split", ""]
    assert main(args) == 0
    store = FeatureStore(tmp_path / "out" / "features")
    shard = str((tmp_path / "shard-000.tar").resolve())
    assert sorted(store.paths) == sorted(f"{shard}/{k}" for i, k in enumerate(keys) if i != 3)
    assert store.row(f"{shard}/{keys[0]}")["captions"] == [CAPTIONS[0]]
    assert any("not a readable image" in r.message and keys[3] in r.message for r in caplog.records)
    assert len(losses(tmp_path / "out")) == 1 and load_translator(tmp_path / "out").config.in_dim == store.token_shape[1]


def test_a_corrupt_shard_is_one_line_and_keeps_what_was_read(assets, images, tmp_path, capsys):
    pytest.importorskip("webdataset", reason="the distributed extra (webdataset) is not installed")
    (tmp_path / "set").mkdir()
    write_shard(tmp_path / "set" / "000.tar", images[:4])
    write_shard(tmp_path / "set" / "001.tar", images[4:])
    data = (tmp_path / "set" / "001.tar").read_bytes()
    (tmp_path / "set" / "001.tar").write_bytes(data[: len(data) // 2 + 100])  # cut mid-member, as a failed copy leaves it
    args = ["train", "--classifier", assets["classifier"], "--lm", assets["lm"], "--captions",
            str(tmp_path / "set" / "{000..001}.tar"), "--out", str(tmp_path / "out"), "--epochs", "1",
            "--batch-size", "4", "--hidden", "32", "--dev-split", ""]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "001.tar" in errors[0] and "unreadable WebDataset shard" in errors[0], err
    kept = FeatureStore(tmp_path / "out" / "features")
    assert len(kept) >= 4  # the first shard, and what the cut one gave before it broke


def test_a_parquet_caption_set_streams_into_the_store(assets, images, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"image": [{"bytes": _jpeg(p), "path": p.name} for p in images],
                      "caption": [[CAPTIONS[i], CAPTIONS[i - 1]] for i in range(len(images))]})
    (tmp_path / "hf" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "hf" / "data" / "train-00000-of-00001.parquet", row_group_size=3)
    pq.write_table(table.slice(0, 2), tmp_path / "hf" / "data" / "test-00000-of-00001.parquet")
    args = ["train", "--classifier", assets["classifier"], "--lm", assets["lm"], "--captions", str(tmp_path / "hf"),
            "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "8", "--hidden", "32", "--dev-split", "",
            "--limit", "6"]
    assert main(args) == 0
    store = FeatureStore(tmp_path / "out" / "features")
    assert len(store) == 6 and all("train-00000" in p for p in store.paths)
    assert store.row(store.paths[0])["captions"] == [CAPTIONS[0], CAPTIONS[-1]]
