"""Wilson intervals and Monroe et al.'s log-odds z, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from texplain.errors import TexplainError
from texplain.statistics import log_odds_dirichlet, mistaken_for, wilson_interval

Z95 = 1.959963984540054


def test_wilson_half_is_symmetric_around_one_half():
    # p = 0.5, n = 10: centre 0.5; half = z / (1 + z²/10) * sqrt(0.025 + z²/400) = 0.263407
    low, high = wilson_interval(5, 10)
    assert float(low) == pytest.approx(0.236593, abs=1e-6)
    assert float(high) == pytest.approx(0.763407, abs=1e-6)


def test_wilson_zero_successes_starts_at_zero():
    # k = 0: low = 0, high = z² / (n + z²) = 3.841459 / 13.841459
    low, high = wilson_interval(0, 10)
    assert float(low) == 0.0
    assert float(high) == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-12)
    assert float(high) == pytest.approx(0.277533, abs=1e-6)


def test_wilson_all_successes_ends_at_one_and_no_trials_is_uninformative():
    low, high = wilson_interval([10, 0], [10, 0])
    assert high[0] == pytest.approx(1.0)
    assert low[0] == pytest.approx(1 - 0.277533, abs=1e-6)
    assert (low[1], high[1]) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(1, 3), (8, 10), (17, 250), (999, 1000), (40, 41)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(k, n, confidence):
    expected = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert (float(low), float(high)) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_is_vectorised_and_narrows_with_n():
    low, high = wilson_interval(np.array([5, 50, 500]), np.array([10, 100, 1000]))
    widths = high - low
    assert widths.shape == (3,) and widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize("k,n,confidence", [(11, 10, 0.95), (-1, 10, 0.95), (1, 10, 1.0), (1, 10, 0.0)])
def test_wilson_rejects_impossible_input(k, n, confidence):
    with pytest.raises(TexplainError):
        wilson_interval(k, n, confidence)


def test_log_odds_default_prior_on_a_hand_computed_table():
    # A = {x: 8, y: 2}, B = {x: 3, y: 7}; prior = A + B = {x: 11, y: 9}, a0 = 20, nA = nB = 10.
    # delta_x = log(19 / (10 + 20 - 8 - 11)) - log(14 / (10 + 20 - 3 - 11)) = log(19/11) - log(14/16)
    # var_x = 1/19 + 1/14;  z_x = 0.680075 / 0.352222 = 1.930815
    # delta_y = log(11 / 19) - log(16 / 14) = -delta_x;  var_y = 1/11 + 1/16;  z_y = -1.736326
    scores = {s.word: s for s in log_odds_dirichlet({"x": 8, "y": 2}, {"x": 3, "y": 7})}
    assert scores["x"].delta == pytest.approx(math.log(19 / 11) - math.log(14 / 16))
    assert scores["x"].delta == pytest.approx(0.680075, abs=1e-6)
    assert scores["x"].z == pytest.approx(1.930815, abs=1e-6)
    assert scores["y"].delta == pytest.approx(-0.680075, abs=1e-6)
    assert scores["y"].z == pytest.approx(-1.736326, abs=1e-6)
    assert (scores["x"].count_a, scores["x"].count_b) == (8, 3)


def test_log_odds_external_prior_and_its_floor():
    # prior {x: 1, y: 1}: a_x = 1, a0 = 2: delta_x = log(9/3) - log(4/8) = log 6; var = 1/9 + 1/4.
    scores = {s.word: s for s in log_odds_dirichlet({"x": 8, "y": 2}, {"x": 3, "y": 7}, prior={"x": 1, "y": 1})}
    assert scores["x"].delta == pytest.approx(math.log(6))
    assert scores["x"].z == pytest.approx(2.981668, abs=1e-6)
    # prior {x: 2, z: 1} lacks y: a_y = 1 (smallest positive), a0 = 3 + 1 = 4.
    # delta_y = log(3 / (10 + 4 - 2 - 1)) - log(8 / (10 + 4 - 7 - 1)) = -1.586965; var = 1/3 + 1/8.
    scores = {s.word: s for s in log_odds_dirichlet({"x": 8, "y": 2}, {"x": 3, "y": 7}, prior={"x": 2, "z": 1})}
    assert scores["y"].delta == pytest.approx(-1.586965, abs=1e-6)
    assert scores["y"].z == pytest.approx(-2.344103, abs=1e-6)


def test_log_odds_prior_strength_rescales_the_prior():
    # prior {x: 1, y: 1} rescaled to strength 20 is {x: 10, y: 10}, a0 = 20:
    # delta_x = log(18 / 12) - log(13 / 17); var = 1/18 + 1/13
    scores = log_odds_dirichlet({"x": 8, "y": 2}, {"x": 3, "y": 7}, prior={"x": 1, "y": 1}, prior_strength=20)
    scores = {s.word: s for s in scores}
    delta = math.log(18 / 12) - math.log(13 / 17)
    assert scores["x"].delta == pytest.approx(delta)
    assert scores["x"].z == pytest.approx(delta / math.sqrt(1 / 18 + 1 / 13))


def test_log_odds_is_antisymmetric_sorted_and_shrinks_rare_words():
    a = {"water": 300, "bird": 200, "rare": 2, "man": 100}
    b = {"water": 30, "bird": 200, "man": 100}
    forward = log_odds_dirichlet(a, b)
    backward = {s.word: s.z for s in log_odds_dirichlet(b, a)}
    assert [s.word for s in forward][0] == "water"
    assert all(s.z == pytest.approx(-backward[s.word]) for s in forward)
    assert [s.z for s in forward] == sorted((s.z for s in forward), reverse=True)
    z = {s.word: s.z for s in forward}
    assert z["water"] > z["rare"] > 0  # seen twice, never elsewhere: weak evidence


def test_log_odds_degenerate_inputs():
    assert log_odds_dirichlet({}, {}) == []
    only = log_odds_dirichlet({"x": 3}, {"x": 5})
    assert only[0].delta == 0.0 and only[0].z == 0.0
    with pytest.raises(TexplainError):
        log_odds_dirichlet({"x": 1}, {"y": 1}, prior={"x": -1})
    with pytest.raises(TexplainError):
        log_odds_dirichlet({"x": 1}, {"y": 1}, prior={"x": 1}, prior_strength=0)


def test_mistaken_for_counts_each_class_errors_by_the_class_predicted_most_first():
    names = ["climbing", "fishing", "throwing"]
    labels = [2, 2, 2, 2, 2, 0, 0, 1]
    predictions = [2, 1, 0, 1, 1, 0, 2, 1]
    errors = mistaken_for(predictions, labels, names)
    assert errors == {"climbing": {"throwing": 1}, "fishing": {}, "throwing": {"fishing": 3, "climbing": 1}}
    assert list(errors["throwing"]) == ["fishing", "climbing"]
    with pytest.raises(ValueError):
        mistaken_for([0], [0, 1], names)
