"""A multi-label linear probe: what a classifier's features hold about caption words, read out linearly.

The reference an explanation is judged against: if a linear map from the
mean-pooled features to "this word is in the image's captions" already names
the right words, the translator and the LM must at least match it to be worth
their cost, and should do better by using the whole token grid and the LM's
knowledge of how scenes are described.

The probe is ridge regression from the standardised features to the binary
word targets (one output per vocabulary word, an unpenalised intercept),
solved in closed form: for ranking words it is as strong as a logistic
regression trained to convergence and takes seconds, not the hours an
iterative fit of a thousand outputs takes on a CPU. Its penalty is chosen
from a grid by the mean precision@k of its top words on a held-out part of
the training images, then it is refit on all of them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from texplain.errors import TexplainError
from texplain.evaluation.metrics import precision_at_k


@dataclass
class ProbeConfig:
    """How the probe is fit.

    min_images: a word enters the vocabulary when it is in the captions of at
    least this many training images. penalties: the ridge grid, as multiples
    of the number of fitted images. held_out: fraction of the training images
    that chooses the penalty. k: the precision@k that chooses it. seed: the
    held-out draw.
    """

    min_images: int = 5
    penalties: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    held_out: float = 0.1
    k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_images < 1 or not self.penalties or not 0.0 < self.held_out < 1.0:
            raise TexplainError("probe: min_images must be at least 1, penalties non-empty, held_out in (0, 1)")


@dataclass
class LinearProbe:
    """A fitted probe: vocabulary, weights (D + 1, V) with the intercept last, the feature mean and scale."""

    vocabulary: list[str]
    weight: Tensor
    mean: Tensor
    scale: Tensor
    penalty: float
    seconds: float = 0.0
    validation: dict[float, float] = field(default_factory=dict)

    def scores(self, features: Tensor) -> Tensor:
        """Word scores (N, V) of features (N, D)."""
        return _design((features.float() - self.mean) / self.scale) @ self.weight

    def top_words(self, features: Tensor, k: int = 10) -> list[list[str]]:
        """The ``k`` highest-scoring words of each image, features (N, D) → N lists."""
        order = self.scores(features).topk(min(k, len(self.vocabulary)), dim=1).indices  # (N, k)
        return [[self.vocabulary[j] for j in row] for row in order.tolist()]


def fit_probe(features: Tensor, words: Sequence[set[str]], config: ProbeConfig | None = None) -> LinearProbe:
    """Fit a probe from pooled features (N, D) to each image's word set; the penalty is chosen on a held-out part."""
    config = config or ProbeConfig()
    started = time.perf_counter()
    if features.dim() != 2 or len(features) != len(words) or len(words) < 10:
        raise TexplainError(f"probe: need (N, D) features for N >= 10 word sets, got {tuple(features.shape)} and {len(words)}")
    counts = Counter(w for ws in words for w in set(ws))
    vocabulary = sorted(w for w, n in counts.items() if n >= config.min_images)
    if not vocabulary:
        raise TexplainError(f"probe: no word is in the captions of {config.min_images} or more images")
    targets = _targets(words, vocabulary)  # (N, V)
    order = torch.randperm(len(words), generator=torch.Generator().manual_seed(config.seed))
    cut = max(1, int(round(config.held_out * len(words))))
    held, kept = order[:cut], order[cut:]
    validation = {}
    for penalty in config.penalties:
        probe = _fit(features[kept], targets[kept], vocabulary, penalty)
        tops = probe.top_words(features[held], config.k)
        validation[penalty] = sum(precision_at_k(t, words[i], config.k) for t, i in zip(tops, held.tolist())) / len(held)
    best = max(config.penalties, key=lambda p: (validation[p], p))
    probe = _fit(features, targets, vocabulary, best)
    probe.seconds, probe.validation = time.perf_counter() - started, validation
    return probe


def _targets(words: Sequence[set[str]], vocabulary: Sequence[str]) -> Tensor:
    """Binary targets (N, V): whether each vocabulary word is in each image's set."""
    index = {w: j for j, w in enumerate(vocabulary)}
    targets = torch.zeros(len(words), len(vocabulary))
    for i, ws in enumerate(words):
        for w in ws:
            if w in index:
                targets[i, index[w]] = 1.0
    return targets


def _design(x: Tensor) -> Tensor:
    """Standardised features (N, D) with a column of ones for the intercept: (N, D + 1)."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)


def _fit(features: Tensor, targets: Tensor, vocabulary: list[str], penalty: float) -> LinearProbe:
    """Ridge regression in closed form, the penalty ``penalty * N`` on the weights but not the intercept."""
    features = features.double()
    mean, scale = features.mean(0), features.std(0).clamp(min=1e-6)  # (D,), (D,)
    x = _design((features - mean) / scale)  # (N, D + 1)
    gram = x.T @ x  # (D + 1, D + 1)
    ridge = torch.full((x.shape[1],), penalty * len(x), dtype=x.dtype)
    ridge[-1] = 0.0
    weight = torch.linalg.solve(gram + torch.diag(ridge), x.T @ targets.double())  # (D + 1, V)
    return LinearProbe(vocabulary, weight.float(), mean.float(), scale.float(), penalty)
