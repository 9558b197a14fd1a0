"""How sure a word frequency is, and whether a word's strength differs between two groups.

A word's frequency is a proportion: ``k`` of ``n`` sentences mention it. Its
uncertainty is the Wilson score interval, which stays inside [0, 1] and
behaves at k = 0 and at small n, where the normal ("Wald") interval does not.

Whether a word is stronger in one group of sentences than in another (a class
against the other classes, train against test, a class against the language
model's prior) is the log-odds ratio with an informative Dirichlet prior of
Monroe, Colaresi and Quinn (2008, "Fightin' Words", eq. 16-22): each group is
a multinomial over word occurrences, ``y_w`` the count of word ``w`` and
``n = sum_w y_w``; with prior pseudo-counts ``a_w`` (``a_0 = sum_w a_w``)

    delta_w = log((y_w^A + a_w) / (n^A + a_0 - y_w^A - a_w))
            - log((y_w^B + a_w) / (n^B + a_0 - y_w^B - a_w))
    var(delta_w) ~ 1 / (y_w^A + a_w) + 1 / (y_w^B + a_w)
    z_w = delta_w / sqrt(var(delta_w))

The prior shrinks rare words toward "no difference", so a word seen twice in
one group and never in the other does not outrank a word seen hundreds of
times. Here a word occurrence is "a sentence mentions the word" (the
document counts of :class:`~texplain.text.words.WordCounter`), so ``n`` is the sum
of a group's document counts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from texplain.errors import TexplainError

CONFIDENCE = 0.95
"""Default confidence level of the Wilson interval."""


def wilson_interval(successes, trials, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``successes / trials``; both may be arrays of the same shape.

    Returns (low, high) arrays (0-d for scalars). ``trials = 0`` gives the
    uninformative interval (0, 1). scipy's ``binomtest(...).proportion_ci(
    method="wilson")`` gives the same numbers one pair at a time; this is the
    vectorised form, for every word of a vocabulary at once.
    """
    if not 0.0 < confidence < 1.0:
        raise TexplainError(f"confidence must be in (0, 1), got {confidence}")
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.any(k < 0) or np.any(n < 0) or np.any(k > n):
        raise TexplainError("wilson_interval: need 0 <= successes <= trials")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    safe_n = np.where(n > 0, n, 1.0)
    p = k / safe_n
    denominator = 1.0 + z**2 / safe_n
    centre = (p + z**2 / (2 * safe_n)) / denominator
    half = z / denominator * np.sqrt(p * (1 - p) / safe_n + z**2 / (4 * safe_n**2))
    low = np.where((n > 0) & (k > 0), np.clip(centre - half, 0.0, 1.0), 0.0)  # exactly 0 at k = 0, as in theory
    high = np.where((n > 0) & (k < n), np.clip(centre + half, 0.0, 1.0), 1.0)  # exactly 1 at k = n
    return low, high


@dataclass(frozen=True)
class LogOdds:
    """One word's shift between group A and group B: counts, log-odds ratio ``delta`` and its ``z``.

    A positive ``z`` means the word is stronger in A; ``|z| > 1.96`` is the
    usual two-sided 5% threshold (Monroe et al. report words by z).
    """

    word: str
    count_a: int
    count_b: int
    delta: float
    z: float

    def to_json(self) -> dict:
        return {"word": self.word, "count_a": self.count_a, "count_b": self.count_b,
                "delta": round(self.delta, 4), "z": round(self.z, 3)}


def log_odds_dirichlet(
    counts_a: Mapping[str, int],
    counts_b: Mapping[str, int],
    prior: Mapping[str, float] | None = None,
    prior_strength: float | None = None,
) -> list[LogOdds]:
    """Log-odds ratio with an informative Dirichlet prior for every word of A or B, by z (A's words first).

    ``prior`` holds background counts (default: A and B pooled, Monroe's
    "the whole corpus"); with ``prior_strength`` they are rescaled to sum to
    it, otherwise they are used as they are. A word of A or B that the prior
    lacks gets the prior's smallest positive pseudo-count, so every log is
    finite. Ties in z are broken alphabetically.
    """
    vocabulary = sorted(set(counts_a) | set(counts_b))
    if not vocabulary:
        return []
    y_a = np.array([counts_a.get(w, 0) for w in vocabulary], dtype=float)
    y_b = np.array([counts_b.get(w, 0) for w in vocabulary], dtype=float)
    alpha, alpha_0 = _pseudo_counts(vocabulary, y_a + y_b, prior, prior_strength)
    delta = _log_odds(y_a, y_a.sum(), alpha, alpha_0) - _log_odds(y_b, y_b.sum(), alpha, alpha_0)
    z = delta / np.sqrt(1.0 / (y_a + alpha) + 1.0 / (y_b + alpha))
    scores = [LogOdds(w, int(a), int(b), float(d), float(s)) for w, a, b, d, s in zip(vocabulary, y_a, y_b, delta, z)]
    return sorted(scores, key=lambda s: (-s.z, s.word))


def _pseudo_counts(
    vocabulary: list[str], pooled: np.ndarray, prior: Mapping[str, float] | None, strength: float | None
) -> tuple[np.ndarray, float]:
    """Prior pseudo-counts a_w (one per vocabulary word) and a_0, the prior's whole mass.

    a_0 includes prior words outside the vocabulary: the log-odds of a word is
    against every other word the prior knows.
    """
    if prior is None:
        alpha, total = pooled.copy(), float(pooled.sum())
    else:
        if any(v < 0 for v in prior.values()):
            raise TexplainError("log-odds prior counts must be non-negative")
        total = float(sum(prior.values()))
        if total <= 0:
            raise TexplainError("log-odds prior has no positive count")
        floor = min(v for v in prior.values() if v > 0)
        alpha = np.array([float(prior.get(w, 0.0)) or floor for w in vocabulary])
        total += float(alpha.sum()) - float(sum(prior.get(w, 0.0) for w in vocabulary))
    if strength is not None:
        if strength <= 0:
            raise TexplainError(f"prior_strength must be positive, got {strength}")
        alpha, total = alpha * (strength / total), float(strength)
    return alpha, total


def _log_odds(y: np.ndarray, n: float, alpha: np.ndarray, alpha_0: float) -> np.ndarray:
    """log((y_w + a_w) / (n + a_0 - y_w - a_w)) per word; 0 where no other word exists to compare with."""
    rest = n + alpha_0 - y - alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rest > 0, np.log(y + alpha) - np.log(np.where(rest > 0, rest, 1.0)), 0.0)


def compare_counts(counts_a: Mapping[str, int], counts_b: Mapping[str, int]) -> list[LogOdds]:
    """Log-odds z of every word, A against B, with the two pooled as the Dirichlet prior.

    The prior is scaled to weigh as much as the smaller group (a_0 =
    min(n_A, n_B)). Unscaled, the pooled counts of a large group (a class's
    300 000 sentences) would swamp a small one (the LM prior's few thousand)
    and shrink every real difference toward zero.
    """
    smaller = min(sum(counts_a.values()), sum(counts_b.values()))
    return log_odds_dirichlet(counts_a, counts_b, prior_strength=smaller) if smaller > 0 else []


def group_accuracy(predictions: Sequence, labels: Sequence, groups: Sequence[str]) -> dict:
    """Accuracy per group, the worst group and the average over images: a JSON-ready dict.

    predictions and labels are class indices or names, one per image; a
    shortcut shows in the worst group first.
    """
    hits: dict[str, list[bool]] = defaultdict(list)
    for prediction, label, group in zip(predictions, labels, groups, strict=True):
        hits[group].append(prediction == label)
    per_group = {g: sum(h) / len(h) for g, h in sorted(hits.items())}
    return {
        "per_group": per_group,
        "group_sizes": {g: len(h) for g, h in sorted(hits.items())},
        "worst_group": min(per_group.values()),
        "average": sum(map(sum, hits.values())) / max(sum(map(len, hits.values())), 1),
    }


def mistaken_for(predictions: Sequence[int], labels: Sequence[int], names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Where each class's errors go: class name -> {predicted class name: images}, most first (class indices in).

    A class that no mitigation lifts is often lost to other classes' shortcuts
    rather than its own (on BAR, throwing photos on rocks and beaches are
    called climbing, fishing and diving): this says which.
    """
    errors: dict[str, Counter] = {name: Counter() for name in names}
    for prediction, label in zip(predictions, labels, strict=True):
        if prediction != label:
            errors[names[label]][names[prediction]] += 1
    return {name: dict(counts.most_common()) for name, counts in errors.items()}
