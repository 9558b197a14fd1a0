"""Class aggregation, split comparison, suspects against classes and the LM prior; the only-background test.

The hand-made results (``analysis_helpers.ROWS``, 100 sentences per image)
plant one background word per class: water for bird, road for car, grass for
dog. "man" is said for every class and "standing" is what the LM says anyway
(it dominates the prior): neither may become a suspect.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from analysis_helpers import PRIOR_COUNTS, make_results
from texplain.analysis.analyse import analyse_results
from texplain.analysis.config import AnalysisConfig
from texplain.analysis.only_background import (
    hide_foreground,
    pair_rows,
    plot_top5,
    summarise,
    write_hidden_set,
)
from texplain.analysis.results import ResultsFolder
from texplain.data.labelled import LabelledImage, read_labelled
from texplain.errors import TexplainError
from texplain.statistics import log_odds_dirichlet, wilson_interval


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> ResultsFolder:
    return make_results(tmp_path_factory.mktemp("hand") / "results")


@pytest.fixture(scope="module")
def analysis(results):
    return analyse_results(results, AnalysisConfig())


def test_class_words_merge_into_one_entry(analysis):
    bird = analysis.classes["bird"]
    words = {w.word: w for w in bird.words["all"]}
    # 'duck' (an added bird word) and 'bird' merge into 'bird' = sentences mentioning either: 70 + 60 + 70
    assert "duck" not in words and words["bird"].count == 200 and words["bird"].is_class
    assert bird.class_word["all"].frequency == pytest.approx(200 / 300)
    low, high = wilson_interval(200, 300)
    assert (bird.class_word["all"].low, bird.class_word["all"].high) == pytest.approx((float(low), float(high)))
    # lift of the class: the odds of 2/3 over the odds of the prior's smoothed (0 + 0.5) / (40 + 1)
    assert bird.class_word["all"].lift == pytest.approx(2.0 / ((0.5 / 41) / (40.5 / 41)))
    assert words["water"].count == 190 and words["water"].frequency == pytest.approx(190 / 300)
    assert words["water"].lift == pytest.approx((190 / 110) / ((2.5 / 41) / (38.5 / 41)))
    assert bird.images == {"all": 3, "train": 2, "test": 1}
    assert bird.class_word["test"].count == 70 and bird.words["test"][0].word == "bird"


def test_each_class_finds_its_planted_background_and_nothing_the_lm_says_anyway(analysis):
    found = {name: [s.word for s in c.suspects] for name, c in analysis.classes.items()}
    assert found == {"bird": ["water"], "car": ["road"], "dog": ["grass"]}


def test_suspect_scores_are_the_log_odds_of_the_merged_counts(analysis):
    water = analysis.classes["bird"].suspects[0]
    bird = {"water": 190, "man": 150, "standing": 150, "grass": 60, "bird": 200}
    others = {"road": 120, "car": 140, "man": 150, "water": 10, "grass": 50, "dog": 60}
    # the pooled Dirichlet prior weighs as much as the smaller side: 530 sentences' words, then the prior's 65
    assert (sum(bird.values()), sum(others.values()), sum(PRIOR_COUNTS.values())) == (750, 530, 65)
    expected = {s.word: s.z for s in log_odds_dirichlet(bird, others, prior_strength=530)}
    against_prior = {s.word: s.z for s in log_odds_dirichlet(bird, PRIOR_COUNTS, prior_strength=65)}
    assert water.z_classes == pytest.approx(expected["water"])
    assert water.z_prior == pytest.approx(against_prior["water"])
    assert water.score == min(water.z_classes, water.z_prior) > 1.96
    assert expected["standing"] > 1.96 and against_prior["standing"] < 0  # over-represented, but the LM's own word
    assert water.examples == ["b2", "b1", "b3"]  # strongest first: 0.9, 0.8, 0.2
    assert (water.low, water.high) == pytest.approx(tuple(float(v) for v in wilson_interval(190, 300)))


def test_without_a_prior_the_lm_word_passes_as_a_finding(tmp_path):
    bare = analyse_results(make_results(tmp_path / "r", prior=False))
    assert "standing" in [s.word for s in bare.classes["bird"].suspects]
    assert all(s.lift is None and s.z_prior is None for s in bare.classes["bird"].suspects)
    assert any("no LM prior" in note for note in bare.notes)


def test_split_comparison_ranks_shifted_words(analysis):
    assert analysis.splits == ["train", "test"] and analysis.compare == ("train", "test")
    shift = analysis.classes["bird"].shift
    assert shift["train"][0].word == "water" and shift["train"][0].z > 1.96
    assert shift["test"][0].word == "grass" and shift["test"][0].z < -1.96
    expected = {s.word: s.z for s in log_odds_dirichlet({"water": 170, "man": 100, "standing": 100, "bird": 130},
                                                        {"water": 20, "grass": 60, "man": 50, "standing": 50, "bird": 70},
                                                        prior_strength=250)}
    assert shift["train"][0].z == pytest.approx(expected["water"])
    assert analysis.classes["dog"].shift == {}
    assert "class 'dog' has no images in split test" in analysis.notes


def test_missing_splits_are_clear_errors(results):
    with pytest.raises(TexplainError, match="cannot compare splits 'train' and 'val'.*no images in 'val'"):
        analyse_results(results, AnalysisConfig(compare=("train", "val")))
    with pytest.raises(TexplainError, match="no split 'nope'"):
        analyse_results(results, AnalysisConfig(suspect_split="nope"))


def test_only_train_and_no_split_at_all(tmp_path):
    rows = [("x1", "bird", None, None, "bird", {"water": 5, "bird": 5}, {"bird": 5}),
            ("x2", "car", None, None, "car", {"road": 5, "car": 5}, {"car": 5})]
    bare = analyse_results(make_results(tmp_path / "r", rows=rows))
    assert bare.splits == [] and bare.compare is None and bare.accuracy == {}
    assert any("no split comparison" in note for note in bare.notes)


def test_pooling_by_prediction(results):
    by_prediction = analyse_results(results, AnalysisConfig(by="predicted"))
    assert {n: c.images["all"] for n, c in by_prediction.classes.items()} == {"bird": 2, "car": 3, "dog": 1}


def test_accuracy_per_group_and_split(analysis):
    every = analysis.accuracy["all"]
    assert every["per_group"] == {"bird|grass": 0.0, "bird|water": 1.0, "car|road": 1.0, "car|water": 1.0, "dog|grass": 1.0}
    assert every["average"] == pytest.approx(5 / 6) and every["worst_group"] == 0.0
    assert analysis.accuracy["test"]["average"] == pytest.approx(0.5)
    assert analysis.accuracy["train"]["worst_group"] == 1.0


def test_analysis_is_json_ready(analysis):
    data = json.loads(json.dumps(analysis.to_json()))
    assert data["classes"]["bird"]["suspects"][0]["word"] == "water"
    assert data["prior_words"][0]["word"] in ("man", "standing")


# --- only background --------------------------------------------------------

HIDDEN = [
    ("h1", "bird", "test", "bird|grass", "car", {"grass": 70, "man": 50}, {}),
    ("h2", "car", "test", "car|water", "bird", {"water": 60, "man": 50}, {}),
]


def test_pairs_by_order_within_label_split_group_and_summarises(results, analysis, tmp_path):
    hidden = make_results(tmp_path / "hidden", rows=HIDDEN, prior=False)
    pairs = pair_rows(results, hidden)
    assert [(o["image"], h["image"]) for o, h in pairs] == [("b3", "h1"), ("c2", "h2")]
    summary = summarise(pairs, analysis.vocabularies)
    bird, car = summary["bird"], summary["car"]
    assert (bird.images, bird.persists, bird.still_label) == (1, 1.0, 0.0)  # still "car", as before
    assert (car.persists, car.still_label) == (0.0, 0.0)
    assert bird.remaining == ["grass", "man"]
    assert bird.class_word == pytest.approx((0.7, 0.0))
    assert bird.top_words[0] == ("grass", pytest.approx(0.7))


def test_pairs_by_name_when_names_match(results, tmp_path):
    renamed = [(f"elsewhere/{name}.png", *rest) for name, *rest in
               [("c2", *HIDDEN[1][1:]), ("b3", *HIDDEN[0][1:])]]
    pairs = pair_rows(results, make_results(tmp_path / "hidden", rows=renamed, prior=False))
    assert [(o["image"], h["image"]) for o, h in pairs] == [("c2", "elsewhere/c2.png"), ("b3", "elsewhere/b3.png")]


def test_unpairable_sets_are_refused(results, tmp_path):
    stray = [("h9", "bird", "test", "bird|snow", "bird", {"snow": 5}, {})]
    with pytest.raises(TexplainError, match="cannot pair.*'bird\\|snow' has 1 hidden images but 0 originals"):
        pair_rows(results, make_results(tmp_path / "hidden", rows=stray, prior=False))


def test_top5_plot_is_a_png(results, tmp_path):
    row = next(results.iter_rows())
    path = plot_top5(row, row, tmp_path / "plots" / "top5.png", title="label: bird")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300


def test_hiding_the_foreground_with_masks(tmp_path):
    image = np.full((6, 8, 3), 200, dtype=np.uint8)
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 3:6] = True
    hidden = np.array(hide_foreground(Image.fromarray(image), mask))
    assert (hidden[mask] == 0).all() and (hidden[~mask] == 200).all()
    with pytest.raises(TexplainError, match="mask is 8x6 but the image is 4x4"):
        hide_foreground(Image.new("RGB", (4, 4)), mask)

    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    items = []
    for name, label in (("a", "bird"), ("b", "car")):
        Image.fromarray(image).save(tmp_path / "img" / f"{name}.jpg", quality=100)
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / f"{name}.png")
        items.append(LabelledImage(tmp_path / "img" / f"{name}.jpg", label, "test", f"{label}|x"))
    written = write_hidden_set(items, tmp_path / "masks", tmp_path / "hidden")
    again = read_labelled(tmp_path / "hidden" / "labels.jsonl")
    assert [(i.path.name, i.label, i.split, i.group) for i in again] == [
        ("a.png", "bird", "test", "bird|x"), ("b.png", "car", "test", "car|x")]
    assert (np.array(Image.open(written[0].path))[mask] == 0).all()
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(TexplainError, match="no mask"):
        write_hidden_set(items, tmp_path / "masks", tmp_path / "hidden2")


def test_hide_foreground_command(tmp_path, capsys):
    from texplain.cli import main

    for label in ("bird", "car"):
        (tmp_path / "set" / label).mkdir(parents=True)
        Image.new("RGB", (8, 6), (200, 200, 200)).save(tmp_path / "set" / label / f"{label}1.png")
    (tmp_path / "masks").mkdir()
    for stem in ("bird1", "car1"):
        Image.new("L", (8, 6), 255).save(tmp_path / "masks" / f"{stem}.png")
    masks = ["--masks", str(tmp_path / "masks")]
    assert main(["hide-foreground", str(tmp_path / "set"), *masks, "--out", str(tmp_path / "bg")]) == 0
    assert "2 images with the foreground hidden" in capsys.readouterr().out
    hidden = read_labelled(tmp_path / "bg" / "labels.jsonl")
    assert [i.label for i in hidden] == ["bird", "car"]
    assert np.array(Image.open(hidden[0].path)).max() == 0  # everything was foreground
    assert main(["hide-foreground", str(tmp_path / "set"), "--masks", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no such mask folder" in capsys.readouterr().err
