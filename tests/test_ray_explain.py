"""explain-dataset on Ray: actors on a local instance write what one process writes; a killed run resumes; bad
input is one line."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch

from conftest import tiny_vit
from texplain.analysis.config import DatasetExplainConfig, PriorConfig
from texplain.analysis.explain_dataset import explain_dataset
from texplain.analysis.results import ResultsFolder
from texplain.cli import main
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.models.classifiers import save_classifier
from texplain.models.explainer import load_explainer
from texplain.models.translator import new_translator, save_translator
from texplain.text.config import ClassWordConfig

pytestmark = pytest.mark.distributed
CLASSES = ["bird", "car", "dog"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_lm, tiny_lm_folder) -> dict:
    """The tiny classifier and a translator for it, saved as folders an actor loads by name."""
    folder = tmp_path_factory.mktemp("ray-models")
    classifier = tiny_vit(3)
    classifier.class_names = list(CLASSES)
    save_classifier(classifier, folder / "classifier")
    torch.manual_seed(0)
    translator = new_translator(classifier, tiny_lm, (101, 64), prefix_len=4, hidden=32)
    translator.provenance.classifier = str(folder / "classifier")
    save_translator(translator, folder / "translator")
    return {"translator": str(folder / "translator"), "classifier": str(folder / "classifier"), "lm": str(tiny_lm_folder)}


@pytest.fixture(scope="module")
def items(images) -> list[LabelledImage]:
    return [LabelledImage(path, CLASSES[i % 3], "train" if i < 5 else "test", None) for i, path in enumerate(images)]


def config() -> DatasetExplainConfig:
    """What the command line below asks for."""
    sampling = SamplingConfig(num_samples=6, min_words=2, max_words=8, batch_size=12, seed=3)
    return DatasetExplainConfig(explain=ExplainConfig(sampling=sampling, examples=2, word_cloud=False), chunk_size=3,
                                class_words=ClassWordConfig(wordnet=False), prior=PriorConfig(kinds=("blank", "mean"), seed=3))


CLI = ["--samples", "6", "--min-words", "2", "--max-words", "8", "--sample-batch", "12", "--seed", "3", "--examples", "2",
       "--chunk-size", "3", "--no-wordnet", "--prior", "blank,mean"]


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def rows_of(folder) -> list[dict]:
    return sorted(ResultsFolder.open(folder).table().to_pylist(), key=lambda r: r["image"])


def test_ray_actors_write_what_one_process_writes_and_a_killed_run_resumes(
    models, items, tmp_path, monkeypatch, ray_instance
):
    """One process explains the set; a Ray run is killed after its first chunk, and the command line resumes it on
    two actors: the same parts, manifest, words per image and prior."""
    from texplain.analysis.ray_engine import RayEngine

    explainer = load_explainer(models["translator"], models["classifier"], models["lm"])
    reference = explain_dataset(explainer, items, tmp_path / "one", config(), progress=False)
    engine = RayEngine(models["translator"], models["classifier"], models["lm"], actors=2)
    real_commit = ResultsFolder.commit
    commits = []

    def killed_after_one_chunk(self, rows, skipped):
        if commits:
            raise RuntimeError("killed")
        commits.append(len(rows))
        real_commit(self, rows, skipped)

    monkeypatch.setattr(ResultsFolder, "commit", killed_after_one_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        explain_dataset(explainer, items, tmp_path / "ray", config(), progress=False, engine=engine)
    assert len(ResultsFolder.open(tmp_path / "ray").done_images()) == 3
    monkeypatch.setattr(ResultsFolder, "commit", real_commit)

    listing = tmp_path / "labels.jsonl"
    listing.write_text("\n".join(json.dumps({"path": str(i.path), "label": i.label, "split": i.split}) for i in items))
    assert main(["explain-dataset", str(listing), "--translator", models["translator"], "--classifier",
                 models["classifier"], "--out", str(tmp_path / "ray"), *CLI, "--engine", "ray", "--actors", "2"]) == 0
    assert reference.total == len(ResultsFolder.open(tmp_path / "ray").done_images()) == 8
    assert rows_of(tmp_path / "ray") == rows_of(tmp_path / "one")  # same words per image, no row lost or doubled
    manifest, expected = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("ray", "one"))
    assert manifest == expected
    assert (tmp_path / "ray" / "prior.json").read_text() == (tmp_path / "one" / "prior.json").read_text()
    writers = {p.name.split("_")[1] for p in (tmp_path / "ray" / "features").glob("shard_*.rows.json")}
    assert writers and all(w.startswith("ray") for w in writers)  # the actors wrote the features, each its own shards


def test_a_pool_the_cluster_cannot_hold_is_refused(models, ray_instance):
    from texplain.analysis.ray_engine import RayEngine

    with pytest.raises(TexplainError, match="no GPUs"):
        RayEngine(models["translator"], device="cuda").connect()
    with pytest.raises(TexplainError, match="holds 2 such actors"):
        RayEngine(models["translator"], actors=3).connect()


def test_engine_ray_without_the_extra_is_one_line(models, images, tmp_path, capsys, monkeypatch):
    for module in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    code = main(["explain-dataset", str(images[0].parent), "--translator", models["translator"], "--out",
                 str(tmp_path / "out"), "--engine", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "texplain[distributed]" in err[-1] and "ray" in err[-1]
    assert not (tmp_path / "out").exists()


def test_an_unreachable_ray_address_is_one_line_and_writes_nothing(models, items, tmp_path, capsys):
    pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    listing = tmp_path / "labels.jsonl"
    listing.write_text("\n".join(json.dumps({"path": str(i.path), "label": i.label}) for i in items))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(["explain-dataset", str(listing), "--translator", models["translator"], "--out", str(tmp_path / "out"),
                 "--engine", "ray", "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and f"127.0.0.1:{port}" in err[-1] and "unreachable" in err[-1]
    assert not (tmp_path / "out").exists()
