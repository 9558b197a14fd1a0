"""A multi-label linear probe: what a classifier's features hold about caption words, read out linearly.

The reference an explanation is judged against: if a logistic regression from
the mean-pooled features to "this word is in the image's captions" already
names the right words, the translator and the LM must at least match it to
be worth their cost, and should do better by using the whole token grid and
the LM's knowledge of how scenes are described.

The probe is one linear layer with a sigmoid per vocabulary word, trained
full-batch with AdamW on the binary cross-entropy; its weight decay is chosen
from a grid by the mean precision@k of its top words on a held-out part of
the training images, then it is refit on all of them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from texplain.errors import TexplainError
from texplain.evaluation.metrics import precision_at_k


@dataclass
class ProbeConfig:
    """How the probe is fit.

    min_images: a word enters the vocabulary when it is in the captions of at
    least this many training images. decays: the weight-decay grid. steps:
    full-batch AdamW steps per fit. lr: its learning rate. held_out: fraction
    of the training images that chooses the decay. k: the precision@k that
    chooses it. seed: the held-out draw.
    """

    min_images: int = 5
    decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    steps: int = 300
    lr: float = 0.01
    held_out: float = 0.1
    k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_images < 1 or self.steps < 1 or not self.decays or not 0.0 < self.held_out < 1.0:
            raise TexplainError("probe: min_images and steps must be at least 1, decays non-empty, held_out in (0, 1)")


@dataclass
class LinearProbe:
    """A fitted probe: vocabulary, weights (V, D), bias (V,), the feature mean and scale it standardises with."""

    vocabulary: list[str]
    weight: Tensor
    bias: Tensor
    mean: Tensor
    scale: Tensor
    decay: float
    seconds: float
    validation: dict[float, float] = field(default_factory=dict)

    def top_words(self, features: Tensor, k: int = 10) -> list[list[str]]:
        """The ``k`` most probable words of each image, features (N, D) → N lists."""
        scores = ((features.float() - self.mean) / self.scale) @ self.weight.T + self.bias  # (N, V)
        order = scores.topk(min(k, len(self.vocabulary)), dim=1).indices  # (N, k)
        return [[self.vocabulary[j] for j in row] for row in order.tolist()]


def fit_probe(features: Tensor, words: Sequence[set[str]], config: ProbeConfig | None = None) -> LinearProbe:
    """Fit a probe from pooled features (N, D) to each image's word set; the decay is chosen on a held-out part."""
    config = config or ProbeConfig()
    started = time.perf_counter()
    if features.dim() != 2 or len(features) != len(words) or len(words) < 10:
        raise TexplainError(f"probe: need (N, D) features for N >= 10 word sets, got {tuple(features.shape)} and {len(words)}")
    counts = Counter(w for ws in words for w in set(ws))
    vocabulary = sorted(w for w, n in counts.items() if n >= config.min_images)
    if not vocabulary:
        raise TexplainError(f"probe: no word is in the captions of {config.min_images} or more images")
    targets = _targets(words, vocabulary)  # (N, V)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(words), generator=generator)
    cut = max(1, int(round(config.held_out * len(words))))
    held, kept = order[:cut], order[cut:]
    validation = {}
    for decay in config.decays:
        probe = _fit(features[kept], targets[kept], vocabulary, decay, config)
        tops = probe.top_words(features[held], config.k)
        validation[decay] = sum(precision_at_k(t, words[i], config.k) for t, i in zip(tops, held.tolist())) / len(held)
    best = max(config.decays, key=lambda d: (validation[d], -d))
    probe = _fit(features, targets, vocabulary, best, config)
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


def _fit(features: Tensor, targets: Tensor, vocabulary: list[str], decay: float, config: ProbeConfig) -> LinearProbe:
    """One full-batch AdamW fit of the logistic regressions on standardised features."""
    features = features.float()
    mean, scale = features.mean(0), features.std(0).clamp(min=1e-6)  # (D,), (D,)
    x = (features - mean) / scale  # (N, D)
    torch.manual_seed(config.seed)
    layer = nn.Linear(x.shape[1], targets.shape[1])
    with torch.no_grad():
        prior = targets.mean(0).clamp(1e-4, 1 - 1e-4)
        layer.bias.copy_(torch.log(prior / (1 - prior)))  # start at the words' base rates
        layer.weight.zero_()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=config.lr, weight_decay=decay)
    loss_fn = nn.BCEWithLogitsLoss()
    with torch.enable_grad():
        for _ in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(layer(x), targets).backward()
            optimizer.step()
    return LinearProbe(vocabulary, layer.weight.detach(), layer.bias.detach(), mean, scale, decay, 0.0)
