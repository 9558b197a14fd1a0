"""JTT and DFR as their papers run them: on a tiny two-group problem both raise the worst group over ERM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from texplain.data.labelled import LabelledImage
from texplain.mitigation.bench import Bench
from texplain.mitigation.config import MitigateConfig
from texplain.mitigation.methods.randmask import RandMask
from texplain.mitigation.methods.texplain import TExplain
from texplain.mitigation.runner import load_bench, run_mitigation
from texplain.mitigation.selection import Selection
from texplain.mitigation.spread import spread_count
from texplain.models.classifiers import load_classifier, save_classifier
from texplain.report.mitigation_report import markdown_table
from texplain.training.classifier_training import TrainingHistory, label_indices, load_pixels, predict, train_classifier
from texplain.training.config import ClassifierTrainConfig
from texplain.training.frozen_front import cut_inputs

CLASSES = ["dark", "light"]


def world(folder, n: int, bias: float, seed: int, split: str) -> list[LabelledImage]:
    """A faint dark or light square (the class) on a strong blue or red background, tied to the class ``bias`` of the time."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = int(rng.integers(0, 2))
        background = label if rng.random() < bias else 1 - label
        image = np.zeros((32, 32, 3))
        image[:] = [0.1, 0.2, 0.9] if background == 0 else [0.9, 0.2, 0.1]
        image[13:19, 13:19] = 0.40 if label == 0 else 0.60
        image = np.clip(image + rng.normal(0, 0.10, image.shape), 0, 1)
        path = folder / f"{split}{i}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        items.append(LabelledImage(path, CLASSES[label], split, f"{CLASSES[label]}|{['blue', 'red'][background]}"))
    return items


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    """A tiny CNN trained on a 95%-biased split: it reads the background, so its worst group is near zero."""
    root = tmp_path_factory.mktemp("baselines")
    train, test = world(root, 300, 0.95, 0, "train"), world(root, 120, 0.5, 1, "test")
    torch.manual_seed(0)
    classifier = load_classifier("timm:test_resnet", pretrained=False, num_classes=2,
                                 model_kwargs={"pretrained_cfg_overlay": {"input_size": [3, 32, 32], "crop_pct": 1.0}})
    classifier.class_names = list(CLASSES)
    train_classifier(classifier, load_pixels(classifier, train), label_indices(train, CLASSES),
                     ClassifierTrainConfig(epochs=4, batch_size=32, lr=1e-3), progress=False)
    save_classifier(classifier, root / "classifier")
    return root, train, test


def test_jtt_and_dfr_raise_the_worst_group(shortcut):
    root, train, test = shortcut
    config = MitigateConfig(methods=("erm", "jtt", "dfr"), seeds=(0,), holdout=0.3,
                            finetune=ClassifierTrainConfig(epochs=5, batch_size=32, lr=1e-3))
    result, _ = run_mitigation(root / "classifier", None, None, train, test, root / "out", config)
    worst = {method: summary["worst_group"]["mean"] for method, summary in result["summary"].items()}
    assert worst["erm"] < 0.3, worst
    assert worst["jtt"] >= worst["erm"] + 0.4 and worst["dfr"] >= worst["erm"] + 0.4, worst
    tuned = len(train) - result["held_out_images"]
    assert 0 < result["runs"]["jtt"][0]["errors"] < tuned // 4  # the minority groups, mostly
    assert result["dfr_balanced_by"] == "group"
    table = markdown_table(result)
    assert "DFR (group-balanced, uses group labels)" in table and "uses the group labels" in table


def test_scores_from_the_cached_last_stage_inputs_are_the_classifiers_own(shortcut):
    root, train, test = shortcut
    config = MitigateConfig(methods=("erm",), seeds=(0,), finetune=ClassifierTrainConfig(trainable="last-stages"))
    result, _ = run_mitigation(root / "classifier", None, None, train, test, root / "out-cached", config)
    classifier = load_classifier(str(root / "classifier"))
    predictions = predict(classifier, load_pixels(classifier, test))
    right = predictions == label_indices(test, CLASSES)
    assert result["runs"]["erm"][0]["average"] == pytest.approx(right.float().mean().item())


def test_the_front_runs_again_only_for_the_images_a_method_changed(shortcut, tmp_path):
    root, train, test = shortcut
    config = MitigateConfig(methods=("masktune",), finetune=ClassifierTrainConfig(trainable="last-stages"))
    bench = load_bench(root / "classifier", train, test, config, tmp_path, progress=False)
    assert bench.cut() == "layer4"
    changed = [3, 5]
    pixels = bench.train_pixels.clone()
    pixels[changed] = 0.0
    module = bench.classifier.module
    assert torch.allclose(bench.front_inputs(pixels, changed), cut_inputs(module, "layer4", pixels, 64), atol=1e-5)
    assert torch.allclose(bench.front_inputs(bench.train_pixels, []), cut_inputs(module, "layer4", bench.train_pixels, 64),
                          atol=1e-5)
    assert torch.equal(bench.predict_train(bench.classifier, [0, 1, 2]), predict(bench.classifier, bench.train_pixels[:3]))
    wider = torch.cat([pixels, torch.ones_like(pixels[:2])])  # two rows a method adds after the split's
    assert torch.allclose(bench.front_inputs(wider, changed), cut_inputs(module, "layer4", wider, 64), atol=1e-5)


@pytest.mark.parametrize("keep", [False, True])
def test_masked_images_take_their_originals_place_or_are_added_beside_them(shortcut, tmp_path, monkeypatch, keep):
    root, train, test = shortcut
    config = MitigateConfig(methods=("texplain",), keep_originals=keep, holdout=0.3,
                            finetune=ClassifierTrainConfig(trainable="last-stages", epochs=1))
    bench = load_bench(root / "classifier", train, test, config, tmp_path, progress=False)
    seen = {}

    def record(classifier, pixels, labels, settings, progress, held_out, front_inputs):
        seen.update(pixels=pixels, labels=labels, held=held_out, front=front_inputs)

    monkeypatch.setattr("texplain.mitigation.bench.train_classifier", record)
    index = [bench.tuned[0], bench.tuned[1], bench.held[0]]
    masked = torch.full((3, *bench.train_pixels.shape[1:]), 7.0)
    _, _, samples = bench.fine_tune_masked(index, masked, 0, "TExplain")
    n, tuned = len(train), len(bench.tuned)
    is_masked = (seen["pixels"] == 7.0).flatten(1).all(1)
    held_masked = (seen["held"][0] == 7.0).flatten(1).all(1)
    if keep:  # every original once, and each masked copy beside it under its label, a held-out one held out
        assert samples == tuned + 2 and len(seen["labels"]) == tuned + 2 and int(is_masked.sum()) == 2
        assert torch.equal(seen["pixels"][:tuned], bench.train_pixels[bench.tuned])
        assert torch.equal(seen["labels"][tuned:], bench.train_labels[index[:2]])
        assert len(seen["held"][1]) == len(bench.held) + 1 and int(held_masked.sum()) == 1
        assert torch.equal(seen["held"][1][-1], bench.train_labels[index[2]])
    else:  # the masked ones in their originals' place
        assert samples == tuned == len(seen["labels"]) and int(is_masked.sum()) == 2
        assert torch.equal(seen["labels"], bench.train_labels[bench.tuned])
        assert len(seen["held"][1]) == len(bench.held) and int(held_masked.sum()) == 1
    assert len(seen["front"][0]) == len(seen["labels"]) and n == len(bench.train_labels)


def test_spread_masks_reach_every_class_and_randmask_masks_as_many(shortcut, tmp_path, monkeypatch):
    root, train, test = shortcut
    config = MitigateConfig(methods=("texplain", "randmask"), spread_masks=True, holdout=0.3,
                            finetune=ClassifierTrainConfig(trainable="last-stages", epochs=1))
    bench = load_bench(root / "classifier", train, test, config, tmp_path, progress=False)
    texplain = TExplain()
    dark = torch.nonzero(bench.train_labels == 0).flatten().tolist()
    texplain.heats = {i: torch.rand(4, 4) for i in dark[: len(dark) // 2]}  # half of one class picked, none of the other
    texplain.count = spread_count(bench.train_labels, list(texplain.heats), 2)
    seen = []
    monkeypatch.setattr(Bench, "fine_tune_masked", lambda self, index, masked, seed, what: seen.append(
        (list(index), masked)) or (self.classifier, TrainingHistory(), 0))
    monkeypatch.setattr(Bench, "checkpoint", lambda self, classifier, name: tmp_path / name)
    _, record = texplain.run(bench, 0)
    RandMask(texplain, every=False).run(bench, 0)
    (index, masked), (random_index, _) = seen
    shares = torch.bincount(bench.train_labels[index]) / torch.bincount(bench.train_labels)
    assert record["masked"] == len(index) == texplain.count == len(random_index)
    assert set(texplain.heats) < set(index) and abs(float(shares[0] - shares[1])) < 0.01
    assert not torch.equal(masked, bench.train_pixels[index])


def test_spare_class_takes_each_images_class_word_region_out_of_its_mask(shortcut, tmp_path, monkeypatch):
    """Maps are found for the shortcut word, then for the picked images' class word; the spared maps are masked."""
    root, train, test = shortcut
    config = MitigateConfig(methods=("texplain",), spare_class=True, holdout=0.3,
                            finetune=ClassifierTrainConfig(trainable="last-stages", epochs=1))
    bench = load_bench(root / "classifier", train, test, config, tmp_path, progress=False)
    bench.translator = bench.lm = object()  # the explanations and maps are stood in for below
    n = len(train)
    words = ["blue"] * 3 + [None] * (n - 3)
    spared = ["dark", None, "light"] + ["dark"] * (n - 3)  # image 1 says no class word
    selection = Selection([str(t.path) for t in train], [t.label for t in train], words, spared, "suspects", "asked for")
    maps = {"blue": torch.ones(4, 4), "dark": torch.zeros(4, 4), "light": torch.ones(4, 4)}
    maps["dark"][0] = 1.0  # the dark square's word covers the top row; light's covers everything
    asked = []

    def heat_maps(classifier, translator, lm, pixels, positions, words, labels, mask, progress):
        asked.append([(i, words[i]) for i in positions])
        return {i: maps[words[i]].clone() for i in positions}, 0

    monkeypatch.setattr("texplain.mitigation.methods.texplain.train_features", lambda *args: None)
    monkeypatch.setattr("texplain.mitigation.methods.texplain.explain_training", lambda *args: ())
    monkeypatch.setattr("texplain.mitigation.methods.texplain.choose", lambda *args: selection)
    monkeypatch.setattr("texplain.mitigation.methods.texplain.heat_maps", heat_maps)
    texplain = TExplain()
    record = texplain.prepare(bench)
    assert asked == [[(0, "blue"), (1, "blue"), (2, "blue")], [(0, "dark"), (2, "light")]]
    assert record["texplain_spared_maps"] == 2 and record["texplain_spared_emptied"] == 1  # light covers all of 2
    assert list(texplain.heats) == [0, 1] and torch.equal(texplain.heats[1], maps["blue"])
    assert texplain.heats[0][0].sum() == 0 and texplain.heats[0][1:].min() == 1.0
    assert record["texplain_masked_fraction"] == pytest.approx((0.75 + 1.0) / 2, abs=0.05)
