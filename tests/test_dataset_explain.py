"""Explaining a labelled set into Parquet: rows, prior, resuming after a kill, refusing bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch

import texplain.analysis.explain_dataset as dataset_explain
import texplain.analysis.results as results_module
from conftest import tiny_vit
from texplain.analysis.config import DatasetExplainConfig, PriorConfig
from texplain.analysis.explain_dataset import explain_dataset
from texplain.analysis.lm_prior import LMPrior
from texplain.analysis.results import ResultsFolder
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.explain import explain_lm_alone
from texplain.models.explainer import Explainer
from texplain.models.translator import new_translator
from texplain.text.config import ClassWordConfig

CLASSES = ["bird", "car", "dog"]
SAMPLES = 6
PRIOR_SAMPLES = 10


@pytest.fixture(scope="module")
def models(tiny_lm):
    classifier = tiny_vit(3)
    classifier.class_names = list(CLASSES)
    torch.manual_seed(0)
    translator = new_translator(classifier, tiny_lm, (101, 64), prefix_len=4, hidden=32).eval()
    return Explainer(classifier, translator, tiny_lm)


@pytest.fixture(scope="module")
def items(images) -> list[LabelledImage]:
    return [
        LabelledImage(path, CLASSES[i % 3], "train" if i < 5 else "test", f"{CLASSES[i % 3]}|{'water' if i % 2 else 'sand'}")
        for i, path in enumerate(images)
    ]


def config(samples: int = SAMPLES, prior: PriorConfig | None = PriorConfig(shuffled=2, pool=4, samples=PRIOR_SAMPLES)) -> DatasetExplainConfig:
    sampling = SamplingConfig(num_samples=samples, min_words=2, max_words=8, batch_size=samples, seed=3)
    return DatasetExplainConfig(explain=ExplainConfig(sampling=sampling, examples=2, word_cloud=False), chunk_size=3,
                                class_words=ClassWordConfig(wordnet=False), prior=prior)


def rows_of(folder) -> list[dict]:
    return sorted(ResultsFolder.open(folder).table().to_pylist(), key=lambda r: r["image"])


@pytest.fixture(scope="module")
def reference(models, items, tmp_path_factory):
    """An uninterrupted run: what every resumed run must equal."""
    folder = tmp_path_factory.mktemp("reference") / "results"
    run = explain_dataset(models, items, folder, config(), progress=False)
    return folder, run


def test_one_row_per_image_in_chunked_parts(reference, items):
    folder, run = reference
    assert (run.written, run.total, run.skipped) == (8, 8, [])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["rows"] for p in manifest["parts"]] == [3, 3, 2] and manifest["complete"]
    rows = rows_of(folder)
    assert [r["image"] for r in rows] == sorted(str(i.path.resolve()) for i in items)
    by_image = {r["image"]: r for r in rows}
    for item in items:
        row = by_image[str(item.path.resolve())]
        assert (row["label"], row["split"], row["group"]) == (item.label, item.split, item.group)
        assert row["n_sentences"] == SAMPLES and len(row["sentences"]) == 2  # only the examples are kept
        assert [t["name"] for t in row["top5"]][0] == row["predicted"] and len(row["top5"]) == 3
        assert row["correct"] == (row["predicted"] == item.label)
        counts = [w["count"] for w in row["words"]]
        assert counts == sorted(counts, reverse=True) and all(1 <= c <= SAMPLES for c in counts)
        assert row["top_word"] == (row["words"][0]["word"] if row["words"] else None)
        assert all(0 < m["count"] <= SAMPLES and m["name"] in CLASSES for m in row["class_mentions"])
    assert pq.read_schema(folder / manifest["parts"][0]["file"]).names == results_module.schema().names


def test_prior_is_explained_after_null_prefixes(reference):
    folder, _ = reference
    prior = LMPrior.from_dict(json.loads((folder / "prior.json").read_text()))
    assert prior.kinds == ("blank", "mean", "shuffled", "lm")
    assert prior.counter.n_sentences == PRIOR_SAMPLES * (1 + 1 + 2 + 1)  # blank, mean, two shuffled, the LM alone
    sizes = {kind: sample.counter.n_sentences for kind, sample in prior.by_kind.items()}
    assert sizes == {"blank": PRIOR_SAMPLES, "mean": PRIOR_SAMPLES, "shuffled": 2 * PRIOR_SAMPLES, "lm": PRIOR_SAMPLES}
    pooled = {w: sum(s.counter.document_counts().get(w, 0) for s in prior.by_kind.values()) for w in prior.counter.document_counts()}
    assert prior.counter.document_counts() == pooled
    # smoothing: an unseen word has (0 + 0.5) / (n + 1), least under the largest kind
    assert prior.frequency("neverseenword") == pytest.approx(0.5 / (2 * PRIOR_SAMPLES + 1))


def test_the_lm_alone_prior_is_what_the_lm_writes_with_no_prefix(models, items, tmp_path):
    """The ``lm`` kind skips the translator: its counts are those of the LM after its end-of-sentence token alone."""
    run_config = config(prior=PriorConfig(kinds=("lm",), samples=PRIOR_SAMPLES))
    explain_dataset(models, items, tmp_path / "results", run_config, progress=False)
    prior = LMPrior.from_dict(json.loads((tmp_path / "results" / "prior.json").read_text()))
    assert prior.kinds == ("lm",) and prior.counter.n_sentences == PRIOR_SAMPLES
    sampling = replace(run_config.explain.sampling, num_samples=PRIOR_SAMPLES)
    alone = explain_lm_alone(models.lm, replace(run_config.explain, sampling=sampling))
    assert prior.counter.document_counts() == alone.counter.document_counts() != {}


def test_killed_mid_chunk_then_resumed_equals_an_unbroken_run(models, items, reference, tmp_path, monkeypatch):
    folder = tmp_path / "results"
    real = dataset_explain._row
    calls = {"n": 0}

    def dies_on_the_fifth_image(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_explain, "_row", dies_on_the_fifth_image)
    with pytest.raises(RuntimeError, match="killed"):
        explain_dataset(models, items, folder, config(), progress=False)
    assert len(ResultsFolder.open(folder).done_images()) == 3  # the first chunk only
    assert not ResultsFolder.open(folder).complete
    monkeypatch.setattr(dataset_explain, "_row", real)
    run = explain_dataset(models, items, folder, config(), progress=False)
    assert (run.written, run.total) == (5, 8)
    assert rows_of(folder) == rows_of(reference[0])


def test_killed_between_part_and_manifest_leaves_no_duplicate(models, items, reference, tmp_path, monkeypatch):
    folder = tmp_path / "results"
    real = results_module.write_json

    def dies_listing_the_second_part(path, value):
        if path.name == "manifest.json" and len(value.get("parts", [])) == 2:
            raise RuntimeError("killed")
        return real(path, value)

    monkeypatch.setattr(results_module, "write_json", dies_listing_the_second_part)
    with pytest.raises(RuntimeError, match="killed"):
        explain_dataset(models, items, folder, config(), progress=False)
    assert len(list((folder / "parts").glob("part-*.parquet"))) == 2  # written, but only one listed
    assert len(ResultsFolder.open(folder).done_images()) == 3
    monkeypatch.setattr(results_module, "write_json", real)
    explain_dataset(models, items, folder, config(), progress=False)
    rows = rows_of(folder)
    assert len({r["image"] for r in rows}) == len(rows) == 8
    assert rows == rows_of(reference[0])
    assert sorted(p.name for p in (folder / "parts").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]


def test_a_finished_run_does_nothing_more(models, items, reference):
    folder, _ = reference
    before = (folder / "manifest.json").read_text()
    run = explain_dataset(models, items, folder, config(), progress=False)
    assert (run.written, run.total) == (0, 8)
    assert json.loads((folder / "manifest.json").read_text())["parts"] == json.loads(before)["parts"]


def test_other_settings_are_refused_and_nothing_changes(models, items, reference):
    folder, _ = reference
    before = (folder / "manifest.json").read_text()
    with pytest.raises(TexplainError, match="other sampling settings"):
        explain_dataset(models, items, folder, config(samples=SAMPLES + 1), progress=False)
    assert (folder / "manifest.json").read_text() == before


def test_unknown_labels_are_refused_unless_allowed(models, items, tmp_path):
    odd = [*items[:2], LabelledImage(items[2].path, "zebra", "train", None)]
    with pytest.raises(TexplainError, match="labels not among the classifier's classes: zebra"):
        explain_dataset(models, odd, tmp_path / "a", config(prior=None), progress=False)
    assert not (tmp_path / "a").exists()
    allowed = config(prior=None)
    allowed.allow_unknown_labels = True
    explain_dataset(models, odd, tmp_path / "b", allowed, progress=False)
    zebra = [r for r in rows_of(tmp_path / "b") if r["label"] == "zebra"]
    assert len(zebra) == 1 and zebra[0]["correct"] is False
    assert not (tmp_path / "b" / "prior.json").exists()


def test_bad_sets_and_folders_are_refused(models, items, tmp_path):
    with pytest.raises(TexplainError, match="empty"):
        explain_dataset(models, [], tmp_path / "a", config(), progress=False)
    twice = [items[0], LabelledImage(items[0].path, "car", "train", None)]
    with pytest.raises(TexplainError, match="listed twice"):
        explain_dataset(models, twice, tmp_path / "a", config(), progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(TexplainError, match="not a results folder"):
        explain_dataset(models, items, busy, config(), progress=False)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(TexplainError, match="not a results folder"):
        ResultsFolder.open(tmp_path / "nothing")


def test_unreadable_images_are_skipped_and_recorded(models, items, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    run = explain_dataset(models, [*items[:2], LabelledImage(broken, "dog", "test", None)], tmp_path / "r",
                          config(prior=None), progress=False)
    assert run.written == 2 and [p for p, _ in run.skipped] == [str(broken.resolve())]
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["skipped"][0]["image"] == str(broken.resolve())


def test_adaptive_sampling_round_trips_through_parquet_and_the_report(models, items, tmp_path):
    from texplain.analysis.analyse import analyse_folders
    from texplain.analysis.config import AnalysisConfig
    from texplain.generate.config import StopRule
    from texplain.report.html_report import write_report

    sampling = SamplingConfig(num_samples=40, min_words=2, max_words=8, round_size=10, seed=3, adaptive=True,
                              stop=StopRule(k=2, min_sentences=10))
    adaptive = DatasetExplainConfig(explain=ExplainConfig(sampling=sampling, examples=2, word_cloud=False), chunk_size=3,
                                    class_words=ClassWordConfig(wordnet=False), prior=None)
    explain_dataset(models, items, tmp_path / "r", adaptive, progress=False)
    rows = rows_of(tmp_path / "r")
    counts = [r["n_sentences"] for r in rows]
    assert all(10 <= n <= 40 and n % 10 == 0 for n in counts) and len(rows) == len(items)
    assert ResultsFolder.open(tmp_path / "r").settings["sampling"]["adaptive"] is True
    folder, analysis, _ = analyse_folders(tmp_path / "r", AnalysisConfig())
    assert analysis.sentences == {"min": min(counts), "mean": round(sum(counts) / len(counts), 1), "max": max(counts)}
    page = write_report(tmp_path / "report", folder, analysis).read_text()
    assert "adaptive sampling" in page and f"{min(counts)}–{max(counts)} sentences" in page
