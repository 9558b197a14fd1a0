"""The demo: the planted shortcut is found for three seeds, not for a balanced control; caching; bad input."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image

from conftest import TINY_DEMO
from texplain import cli
from texplain.analysis.analyse import analyse_folders
from texplain.analysis.config import AnalysisConfig
from texplain.demo.config import DemoConfig
from texplain.demo.run import _generate_world, _pretrained_classifier, run_demo, untrained_classifier
from texplain.errors import TexplainError
from texplain.generate.config import SamplingConfig
from texplain.models.classifiers import load_classifier

# The demo's classifier (a resnet10t pretrained on the captioned scenes' objects) at a
# smaller test split: small enough for CI (about 3 minutes each on one thread, one test per core).
GROUND_TRUTH = dict(test_images=90, sampling=SamplingConfig(num_samples=10))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_background_is_found(tmp_path, seed):
    """A Waterbirds analogue: the classifier knows the objects well above chance (a third) yet fails a group off its
    class's planted place, and every class's planted place is among its suspects."""
    summary = run_demo(DemoConfig(out=tmp_path, seed=seed, **GROUND_TRUTH), progress=False)
    assert summary["accuracy"]["average"] > 0.45 and summary["accuracy"]["worst_group"] < 0.4, summary["accuracy"]
    for name, result in summary["classes"].items():
        assert result["shortcut_found"], (name, result["suspects"], result["top_words"][:5])
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["classes"] == summary["classes"]
    assert (tmp_path / "report" / "index.html").is_file()


@pytest.mark.slow
def test_balanced_control_learns_objects_and_no_planted_place(tmp_path):
    """Trained on a balanced split, the classifier that learned the objects first is right on most images, and no class's planted place comes out."""
    summary = run_demo(DemoConfig(out=tmp_path, balanced=True, **GROUND_TRUTH), progress=False)
    assert summary["accuracy"]["average"] > 0.8, summary["accuracy"]
    for name, result in summary["classes"].items():
        assert not result["shortcut_found"], (name, result["suspects"], result["top_words"][:5])


def test_second_run_reuses_every_step(tiny_demo):
    stamps = {p: p.stat().st_mtime_ns for p in tiny_demo.rglob("*") if p.is_file() and "report" not in p.parts}
    summary_before = json.loads((tiny_demo / "summary.json").read_text())
    summary = run_demo(DemoConfig(out=tiny_demo, **TINY_DEMO), progress=False)
    changed = [p for p, t in stamps.items() if p.exists() and p.stat().st_mtime_ns != t and p.name not in ("summary.json", "demo_settings.json")]
    assert changed == []
    assert summary["classes"] == summary_before["classes"]


def test_summary_is_the_analysis_of_the_results(tiny_demo):
    """The demo's summary comes from the same analysis (and suspects) as `texplain analyse` on its test split."""
    summary = json.loads((tiny_demo / "summary.json").read_text())
    _, analysis, hidden = analyse_folders(tiny_demo / "results", AnalysisConfig(by="predicted", suspect_split="test"),
                                          tiny_demo / "results_only_bg")
    predicted = {name: report.images.get("test", 0) for name, report in analysis.classes.items()}
    assert sum(predicted.values()) == 45  # every test image, pooled by its predicted class
    for name, result in summary["classes"].items():
        assert result["planted_background"] == {"bird": "water", "car": "snow", "dog": "sand"}[name]
        assert result["images"] == predicted.get(name, 0)
        report = analysis.classes.get(name)
        words = [s["word"] for s in result["suspects"]]
        assert words == ([s.word for s in report.suspects] if report else [])
        assert result["shortcut_found"] == (result["planted_background"] in words)
        assert result["planted_rank"] == (words.index(result["planted_background"]) + 1 if result["shortcut_found"] else None)
        top = [(w["word"], w["frequency"]) for w in result["top_words"]]
        assert top == ([(w.word, round(w.frequency, 4)) for w in report.words.get("test", [])] if report else [])
        assert all(0 < f <= 1 for _, f in top) and [f for _, f in top] == sorted((f for _, f in top), reverse=True)
    accuracy = summary["accuracy"]
    assert set(accuracy["per_group"]) == {f"{c}|{b}" for c in summary["classes"] for b in ("water", "snow", "sand")}
    assert accuracy["worst_group"] == min(accuracy["per_group"].values()) <= accuracy["average"]
    assert sum(accuracy["group_sizes"].values()) == 45
    assert (tiny_demo / "report" / "index.html").is_file()


def test_the_demo_explains_a_sample_of_train_and_reports_train_against_test(tiny_demo):
    """Train images explained beside test (a seeded sample), so that the report shows the split comparison."""
    from texplain.analysis.results import ResultsFolder

    splits = Counter(row["split"] for row in ResultsFolder.open(tiny_demo / "results").iter_rows(["split"]))
    assert splits == {"train": 15, "test": 45}
    _, analysis, _ = analyse_folders(tiny_demo / "results", AnalysisConfig(by="predicted", suspect_split="test"))
    assert analysis.compare == ("train", "test")
    assert not any("no split comparison" in note for note in analysis.notes)
    html = (tiny_demo / "report" / "index.html").read_text()
    assert "What shifts between train and test" in html
    assert "Only background" in html


def test_size_too_small_is_refused():
    with pytest.raises(TexplainError, match="too small to train on"):
        DemoConfig(train_images=10)


def test_bad_output_folder_and_size_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["demo", "--out", str(blocker / "demo")]) == 2
    assert "cannot write the demo there" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--train-images", "5"]) == 2
    assert "too small to train on" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--classifier-epochs", "0"]) == 2
    assert "every epochs setting must be at least 1" in capsys.readouterr().err


def test_a_pretrained_cnn_demo_saves_a_classifier_with_the_split_classes(tmp_path):
    config = DemoConfig(out=tmp_path, classifier="test_resnet", pretrain_epochs=1, caption_images=150, train_images=90,
                        test_images=45, sampling=SamplingConfig(num_samples=3), classifier_epochs=1, lm_epochs=1, translator_epochs=1)
    summary = run_demo(config, progress=False)
    classifier = load_classifier(str(tmp_path / "classifier"))
    assert classifier.build["spec"] == "timm:test_resnet"
    assert classifier.class_names == ["bird", "car", "dog"]
    pixels = classifier.preprocess(Image.open(next((tmp_path / "world" / "split").rglob("*.png"))).convert("RGB"))
    assert classifier.features_and_logits(pixels[None])[1].shape == (1, 3)
    assert set(summary["classes"]) <= {"bird", "car", "dog"}


def test_pretraining_trains_the_backbone_before_the_split(tmp_path):
    """The pretrained backbone differs from the untrained one the same seed gives; the head is fresh, for the split's classes."""
    config = DemoConfig(out=tmp_path, classifier="test_resnet", pretrain_epochs=1, caption_images=150, train_images=90,
                        test_images=45)
    world = _generate_world(config, tmp_path, progress=False)
    torch.manual_seed(0)
    pretrained = _pretrained_classifier(config, world, 3, progress=False)
    torch.manual_seed(0)
    untrained = untrained_classifier("test_resnet", 7, 64)
    changed = [k for k, v in pretrained.module.state_dict().items()
               if not k.startswith("fc.") and v.is_floating_point() and not torch.equal(v, untrained.module.state_dict()[k])]
    assert changed
    assert pretrained.module.fc.out_features == 3 and pretrained.build["num_classes"] == 3


def test_unknown_classifier_is_refused_before_any_work(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "d"), "--classifier", "no_such_net"]) == 2
    assert "unknown classifier 'no_such_net'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
