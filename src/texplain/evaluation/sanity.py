"""Sanity checks for word explanations, after Adebayo et al. (2018), "Sanity Checks for Saliency Maps".

An explanation that stays the same when what the classifier learned is
destroyed explains nothing. Three checks:

1. **Model randomisation cascade.** The classifier's parameterised stages are
   randomised one after another from the output down to the input (each
   step keeps the earlier ones randomised); after each step the images are
   explained again and the new word frequencies are rank-correlated
   (Spearman, Kendall) with the original ones over the union of both top-k
   word lists. Stages after the feature layer (the head) cannot change the
   features, so their rows say ``features_changed: false``; from the feature
   layer down the correlation must fall.
2. **Shuffled pairing.** Each image's explanation is compared with the
   explanation of another image's features (a derangement): it must agree
   less than the same image explained with another seed does.
3. **Seed.** The same features and seed give the very same sentences.

A weight is randomised by redrawing it from a normal distribution with the
tensor's own mean and standard deviation (0.02 for a constant tensor): the
scale of the activations is kept, the learned structure is lost.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from texplain.generate.config import ExplainConfig
from texplain.generate.explain import Explanation, explain_features, explain_stream
from texplain.models.classifiers import Classifier
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.progress import tqdm

CONSTANT_STD = 0.02
"""Spread used to randomise a tensor whose values are all equal (a bias at zero, a norm's scale at one)."""

ROOT_STAGE = "<own parameters>"
"""Stage name for parameters held by the model itself (a ViT's class token and position embeddings)."""


@dataclass
class CascadeStep:
    """One step of the randomisation cascade.

    stage: the stage randomised at this step (all earlier steps' stages stay
    randomised). features_changed: whether the features at the feature layer
    moved at all. spearman, kendall: mean rank correlation with the original
    word frequencies over the images (NaN when undefined for every image).
    """

    stage: str
    features_changed: bool
    spearman: float
    kendall: float
    images: int

    def to_json(self) -> dict:
        return {"stage": self.stage, "features_changed": self.features_changed,
                "spearman": _round(self.spearman), "kendall": _round(self.kendall), "images": self.images}


def explain_all(translator: Translator, lm: FrozenLM, features: Tensor, config: ExplainConfig) -> list[Explanation]:
    """Explain each image's features (n, T, D) with the same sampling settings and seed."""
    return list(explain_stream(translator, lm, features, config))


def rank_correlation(a: dict[str, float], b: dict[str, float], k: int = 10) -> tuple[float, float]:
    """Spearman and Kendall correlation of two word-frequency dicts over the union of their top-k words.

    A word missing from one side has frequency 0 there. NaN when either side
    is constant over the union (e.g. fewer than two words).
    """
    from scipy.stats import kendalltau, spearmanr

    union = list(dict.fromkeys(list(a)[:k] + list(b)[:k]))
    x = [a.get(w, 0.0) for w in union]
    y = [b.get(w, 0.0) for w in union]
    if len(union) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def mean_correlation(pairs: Sequence[tuple[Explanation, Explanation]], k: int = 10) -> dict:
    """Mean Spearman and Kendall over pairs of explanations; ``images`` counts the defined pairs."""
    values = np.array([rank_correlation(a.counter.frequencies(), b.counter.frequencies(), k) for a, b in pairs])
    values = values.reshape(-1, 2)
    defined = ~np.isnan(values[:, 0])
    mean = values[defined].mean(0) if defined.any() else np.array([math.nan, math.nan])
    return {"spearman": _round(float(mean[0])), "kendall": _round(float(mean[1])), "images": int(defined.sum())}


def derangement(n: int, seed: int = 0) -> list[int]:
    """A seeded permutation of range(n) with no fixed point: image i is paired with image p[i] != i."""
    if n < 2:
        raise ValueError("a derangement needs at least two items")
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


def shuffled_pairing(explanations: Sequence[Explanation], permutation: Sequence[int], k: int = 10) -> dict:
    """Agreement of each image's explanation with the explanation of the image it is shuffled with."""
    return mean_correlation([(explanations[i], explanations[j]) for i, j in enumerate(permutation)], k)


def reseeded_agreement(
    translator: Translator, lm: FrozenLM, features: Tensor, reference: Sequence[Explanation], config: ExplainConfig, k: int = 10
) -> dict:
    """Agreement of each image's explanation with itself under another seed: the ceiling the checks compare to."""
    other = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, seed=config.sampling.seed + 1))
    return mean_correlation(list(zip(reference, explain_all(translator, lm, features, other))), k)


def same_seed_identical(translator: Translator, lm: FrozenLM, features: Tensor, config: ExplainConfig) -> bool:
    """Whether two explanations of the same features (T, D) with the same seed have identical sentences."""
    return explain_features(translator, lm, features, config).sentences == explain_features(translator, lm, features, config).sentences


def cascade_stages(module: nn.Module, pixels: Tensor) -> list[str]:
    """The model's parameterised stages, from the output back to the input.

    Stages are the model's children, with containers (``nn.Sequential``,
    ``nn.ModuleList`` and modules that hold a stack of three or more blocks)
    opened into their entries. They are ordered by when a forward pass on
    ``pixels`` (1, 3, H, W) first runs them, then reversed; stages that never
    run are left out. The model's own parameters come last.
    """
    units = _units(module, "")
    order: list[str] = []
    handles = [unit.register_forward_pre_hook(_first_call(order, name)) for name, unit in units]
    try:
        with torch.inference_mode():
            module(pixels[:1])
    finally:
        for handle in handles:
            handle.remove()
    stages = order[::-1]
    if any(True for _ in module.parameters(recurse=False)):
        stages.append(ROOT_STAGE)
    return stages


def stage_parameters(module: nn.Module, stage: str) -> list[nn.Parameter]:
    """The parameters a stage owns."""
    if stage == ROOT_STAGE:
        return list(module.parameters(recurse=False))
    return list(module.get_submodule(stage).parameters())


def randomise_(parameters: Sequence[nn.Parameter], generator: torch.Generator) -> None:
    """Redraw each parameter in place from N(its mean, its std) (std 0.02 when it is constant)."""
    with torch.no_grad():
        for p in parameters:
            values = p.detach().float()
            std = float(values.std()) if values.numel() > 1 else 0.0
            if not std > 0:
                std = CONSTANT_STD
            noise = torch.randn(p.shape, generator=generator)  # same shape as p, on the CPU
            p.copy_((noise * std + float(values.mean())).to(p.dtype))


def randomisation_cascade(
    classifier: Classifier,
    translator: Translator,
    lm: FrozenLM,
    pixels: Tensor,
    reference: Sequence[Explanation],
    config: ExplainConfig,
    k: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> list[CascadeStep]:
    """Randomise the classifier's stages from the output down and measure how the explanations move.

    pixels: (n, 3, H, W) images whose original explanations are ``reference``.
    The classifier itself is left untouched (a copy is randomised).
    """
    device = classifier.device
    pixels = pixels.to(device)
    copied = dataclasses.replace(classifier, module=copy.deepcopy(classifier.module))
    with torch.inference_mode():
        original, _ = classifier.features_and_logits(pixels)  # (n, T, D)
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for stage in tqdm(cascade_stages(copied.module, pixels), desc="cascade", unit="stage", disable=not progress):
        randomise_(stage_parameters(copied.module, stage), generator)
        with torch.inference_mode():
            features, _ = copied.features_and_logits(pixels)  # (n, T, D)
        changed = not torch.equal(features, original)
        explanations = explain_all(translator, lm, features, config) if changed else list(reference)
        agreement = mean_correlation(list(zip(reference, explanations)), k)
        steps.append(CascadeStep(stage, changed, _float(agreement["spearman"]), _float(agreement["kendall"]), len(reference)))
    return steps


def _units(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Parameterised stages under ``module`` (see :func:`cascade_stages`), with their full names."""
    units = []
    for name, child in module.named_children():
        if not any(True for _ in child.parameters()):
            continue
        full = prefix + name
        if isinstance(child, (nn.Sequential, nn.ModuleList)) or _holds_stack(child):
            units += _units(child, full + ".")
        else:
            units.append((full, child))
    return units


def _holds_stack(module: nn.Module, minimum: int = 3) -> bool:
    """Whether a container with at least ``minimum`` parameterised entries lies anywhere below ``module``."""
    for sub in module.modules():
        if sub is not module and isinstance(sub, (nn.Sequential, nn.ModuleList)):
            if sum(1 for c in sub.children() if any(True for _ in c.parameters())) >= minimum:
                return True
    return False


def _first_call(order: list[str], name: str) -> Callable:
    def hook(_module: nn.Module, _args: object) -> None:
        if name not in order:
            order.append(name)

    return hook


def _round(value: float) -> float | None:
    """Four decimals for JSON; NaN becomes None (JSON has no NaN)."""
    return None if value is None or math.isnan(value) else round(value, 4)


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)
