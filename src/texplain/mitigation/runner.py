"""The Table 2 comparison: TExplain's mitigation beside its baselines, same data, same held-out part, same seeds.

Methods (names as in the JSON and the table), one file each under :mod:`.methods`:

- ``erm``: the classifier as trained, untouched;
- ``randmask`` / ``randmask_all``: random masks as large as TExplain's on as
  many random samples, or on all, fine-tuned like TExplain;
- ``masktune``: the labelled class's Grad-CAM masked on every sample, one epoch;
- ``jtt``: the errors of a briefly trained identification model up-weighted;
- ``dfr``: the last layer refitted on the balanced held-out part;
- ``texplain``: the samples explained by a shortcut word, masked where that
  word is, fine-tuned.

Each method's seed-independent work (selection and heat maps, MaskTune's
maps) runs once; each seed then gives one classifier per method, scored on
the same test images: accuracy per group (class x background where the
data names groups, else per class), the worst group and the average, as
mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.mitigation.bench import Bench, Method, check_not_original
from texplain.mitigation.config import MitigateConfig
from texplain.mitigation.holdout import holdout_positions
from texplain.mitigation.methods.dfr import DFR
from texplain.mitigation.methods.erm import ERM
from texplain.mitigation.methods.jtt import JTT
from texplain.mitigation.methods.masktune import MaskTune
from texplain.mitigation.methods.randmask import RandMask
from texplain.mitigation.methods.texplain import MaskedExample, TExplain
from texplain.models.classifiers import Classifier, load_classifier
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.training.classifier_training import label_indices, load_pixels

log = logging.getLogger(__name__)


def methods_for(names: Sequence[str]) -> tuple[list[Method], TExplain | None]:
    """The method objects for ``names``, in that order, and the TExplain whose selection and masks they need (None: none does).

    RandMask sizes its masks by TExplain's, so TExplain prepares whenever
    either runs.
    """
    texplain = TExplain()
    made = {"erm": ERM, "masktune": MaskTune, "jtt": JTT, "dfr": DFR}
    out: list[Method] = []
    for name in names:
        if name == "texplain":
            out.append(texplain)
        elif name in ("randmask", "randmask_all"):
            out.append(RandMask(texplain, every=name == "randmask_all"))
        else:
            out.append(made[name]())
    needed = any(isinstance(m, (TExplain, RandMask)) for m in out)
    return out, texplain if needed else None


def check_translator(classifier: Classifier, translator: Translator, sample: torch.Tensor) -> None:
    """Refuse a translator whose input does not fit the classifier's features (sample pixels (1, 3, H, W))."""
    with torch.inference_mode():
        features, _ = classifier.features_and_logits(sample.to(classifier.device))  # (1, T, D)
    have = tuple(features.shape[1:])
    want = (translator.config.in_tokens, translator.config.in_dim)
    layer = translator.provenance.feature_layer
    if have != want or (layer and layer != classifier.feature_layer):
        raise TexplainError(
            f"the translator does not match classifier {classifier.spec}: it reads features {want} from layer "
            f"{layer or '?'}, the classifier gives {have} from {classifier.feature_layer}"
        )


def run_mitigation(
    classifier: str | os.PathLike,
    translator: Translator | None,
    lm: FrozenLM | None,
    train_items: Sequence[LabelledImage],
    test_items: Sequence[LabelledImage],
    out: str | os.PathLike,
    config: MitigateConfig | None = None,
    progress: bool = False,
) -> tuple[dict, list[MaskedExample]]:
    """Run every method over every seed; returns the JSON-ready result and a few masked examples.

    ``classifier`` is named as everywhere (a saved folder, ``timm:NAME``,
    ``hf:ID``, ...); it is only read, and each fine-tuned copy is saved.

    The TExplain checkpoint of each seed is saved under ``out/checkpoints``;
    the training images' features are kept in ``out/train_features``.
    """
    config = config or MitigateConfig()
    out = Path(out)
    check_not_original(out, classifier)
    bench = load_bench(str(classifier), train_items, test_items, config, out, progress)
    methods, texplain = methods_for(config.methods)
    if texplain is not None:
        if translator is None or lm is None:
            raise TexplainError("mitigation: TExplain and RandMask need a translator and a language model")
        check_translator(bench.classifier, translator, bench.train_pixels[:1])
        bench.translator, bench.lm = translator.to(config.device), lm.to(config.device)
    result: dict = {"settings": config.to_json(), "train_images": len(train_items), "test_images": len(test_items),
                    "held_out_images": len(bench.held), "groups": sorted(set(bench.test_groups)),
                    "classes": bench.classifier.class_names}
    for method in ([texplain] if texplain is not None else []) + [m for m in methods if m is not texplain]:
        result.update(method.prepare(bench))
    runs: dict[str, list[dict]] = {}
    for method in methods:
        runs[method.name] = []
        for seed in config.seeds:
            classifier, extra = method.run(bench, seed)
            runs[method.name].append(bench.score(classifier, seed, extra))
            log.info("%s seed %d: worst group %.3f, average %.3f", method.name, seed,
                     runs[method.name][-1]["worst_group"], runs[method.name][-1]["average"])
    result["labels"] = {m.name: m.label for m in methods}
    result["runs"] = runs
    result["summary"] = {name: summarise_runs(r) for name, r in runs.items()}
    return result, texplain.examples if texplain is not None and "texplain" in config.methods else []


def load_bench(
    spec: str, train_items: Sequence[LabelledImage], test_items: Sequence[LabelledImage], config: MitigateConfig,
    out: Path, progress: bool,
) -> Bench:
    """Load the classifier, preprocess both splits once, and hold out part of train."""
    if not train_items or not test_items:
        raise TexplainError("mitigation: needs labelled train and test images")
    classifier = load_classifier(spec, trust_code=config.trust_code).to(config.device)
    names = classifier.class_names
    groups = [i.group or i.label for i in train_items]
    return Bench(
        config=config, classifier_spec=spec, classifier=classifier, train_paths=[str(i.path) for i in train_items],
        train_pixels=load_pixels(classifier, train_items, progress), train_labels=label_indices(train_items, names),
        train_groups=groups, held=holdout_positions(groups, config.holdout),
        test_pixels=load_pixels(classifier, test_items, progress), test_labels=label_indices(test_items, names),
        test_groups=[i.group or i.label for i in test_items], test_classes=[i.label for i in test_items],
        out=out, progress=progress,
    )


def _mean_std(values: Sequence[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def summarise_runs(runs: Sequence[dict]) -> dict:
    """Mean ± std over seeds of worst-group and average accuracy, and of each group's and class's accuracy."""
    def by(key: str) -> dict:
        return {name: _mean_std([r[key][name] for r in runs]) for name in runs[0][key]}

    return {
        "worst_group": _mean_std([r["worst_group"] for r in runs]),
        "average": _mean_std([r["average"] for r in runs]),
        "per_group": by("per_group"),
        "per_class": by("per_class"),
        "seeds": [r["seed"] for r in runs],
    }
