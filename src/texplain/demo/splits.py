"""The demo's data sets made of scenes: captioned scenes with no shortcut, and a Waterbirds-like shortcut split.

* :func:`make_caption_world`: random objects on random backgrounds, to train
  the translator and pretrain the small language model (no shortcut).
* :func:`make_shortcut_split`: a Waterbirds-like labelled train/test split.
  Each class has a *planted* background (:data:`PLANTED_BACKGROUNDS`): in
  train a fraction ``bias`` of each class sits on its planted background, in
  test every class × background group is the same size. The default split is
  bird, car and dog, planted on water, snow and sand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from texplain.demo.config import DEFAULT_SHORTCUT_CLASSES
from texplain.demo.sampling import check_count, check_names, check_seed, check_size, make_scene, scene_seeds
from texplain.demo.scenes import BACKGROUNDS, CLASSES, Scene
from texplain.errors import TexplainError

PLANTED_BACKGROUNDS: dict[str, str] = {
    "bird": "water",
    "car": "snow",
    "dog": "sand",
    "cat": "indoor",
    "fish": "grass",
    "boat": "road",
    "plane": "sky",
}
"""Each class's shortcut background in :func:`make_shortcut_split`; one class per background."""


def planted_background(cls: str) -> str:
    """The background that ``make_shortcut_split`` plants under class ``cls`` in training."""
    check_names([cls], CLASSES, "class")
    return PLANTED_BACKGROUNDS[cls]


def make_caption_world(
    n: int,
    seed: int = 0,
    size: int = 64,
    n_captions: int = 5,
    classes: Sequence[str] = CLASSES,
    backgrounds: Sequence[str] = BACKGROUNDS,
    split: str = "train",
) -> list[Scene]:
    """``n`` captioned scenes: classes balanced, backgrounds uniform and independent of the class.

    For training the translator and pretraining the language model: no
    background predicts the class, so nothing here teaches a shortcut.
    """
    classes = check_names(classes, CLASSES, "class")
    backgrounds = check_names(backgrounds, BACKGROUNDS, "background")
    check_count(n, classes, "number of images")
    check_size(size)
    check_seed(seed)
    rng = np.random.default_rng(seed)
    labels = [str(label) for label in rng.permutation(_spread(rng, n, classes))]
    places = [backgrounds[i] for i in rng.integers(len(backgrounds), size=n)]
    return [
        make_scene(label, place, scene_seed, size, split, None, n_captions)
        for label, place, scene_seed in zip(labels, places, scene_seeds(rng, n), strict=True)
    ]


def _spread(rng: np.random.Generator, n: int, names: Sequence[str]) -> list[str]:
    """``n`` names, each ``n // len(names)`` times and the remainder on randomly chosen names."""
    base, extra = divmod(n, len(names))
    lucky = set(rng.choice(len(names), size=extra, replace=False).tolist())
    return [name for i, name in enumerate(names) for _ in range(base + (i in lucky))]


def _groups(
    rng: np.random.Generator,
    classes: Sequence[str],
    backgrounds: Sequence[str],
    n: int,
    bias: float | None,
) -> list[tuple[str, str]]:
    """(class, background) pairs for one split, stratified rather than sampled.

    With ``bias`` each class puts exactly ``round(bias * n_class)`` items on
    its planted background and spreads the rest evenly over the split's other
    backgrounds; with ``None`` every group gets an equal share. Stratifying
    makes the realised bias equal the requested one instead of scattering
    around it. The pairs come back in random order.
    """
    pairs = []
    per_class = Counter(_spread(rng, n, classes))
    for cls in classes:
        n_class = per_class[cls]
        if bias is None:
            places = _spread(rng, n_class, backgrounds)
        else:
            planted = PLANTED_BACKGROUNDS[cls]
            n_planted = round(bias * n_class)
            others = [name for name in backgrounds if name != planted]
            places = [planted] * n_planted + _spread(rng, n_class - n_planted, others)
        pairs.extend((cls, place) for place in places)
    return [pairs[i] for i in rng.permutation(len(pairs))]


def make_shortcut_split(
    classes: Sequence[str] = DEFAULT_SHORTCUT_CLASSES,
    backgrounds: Sequence[str] | None = None,
    n_train: int = 900,
    n_test: int = 450,
    bias: float | None = 0.95,
    seed: int = 0,
    size: int = 64,
    balanced: bool = False,
    n_captions: int = 5,
) -> list[Scene]:
    """A Waterbirds-like labelled split: the train scenes, then the test scenes.

    The label is the objects' class. In train, a fraction ``bias`` of each
    class sits on its planted background (:data:`PLANTED_BACKGROUNDS`) and
    the rest is spread evenly over the split's other backgrounds; in test
    every class x background group has (about) the same size. ``bias=None`` or
    ``balanced=True`` makes train balanced too: the control experiment.
    ``backgrounds`` defaults to the classes' planted backgrounds and must
    contain them. Classes are balanced in both splits.
    """
    classes = check_names(classes, CLASSES, "class")
    if backgrounds is None:
        backgrounds = [PLANTED_BACKGROUNDS[cls] for cls in classes]
    backgrounds = check_names(backgrounds, BACKGROUNDS, "background")
    if len(backgrounds) < 2:
        raise TexplainError("a shortcut split needs at least two backgrounds")
    for cls in classes:
        if PLANTED_BACKGROUNDS[cls] not in backgrounds:
            raise TexplainError(
                f"class {cls!r} needs its planted background {PLANTED_BACKGROUNDS[cls]!r} among the backgrounds"
            )
    if bias is not None and not (isinstance(bias, (int, float)) and 0 <= bias <= 1):
        raise TexplainError(f"bias must be between 0 and 1 (or None for a balanced split), got {bias!r}")
    check_count(n_train, classes, "n_train")
    check_count(n_test, classes, "n_test")
    check_size(size)
    check_seed(seed)
    rng = np.random.default_rng(seed)
    scenes = []
    for split, n, split_bias in (("train", n_train, None if balanced else bias), ("test", n_test, None)):
        pairs = _groups(rng, classes, backgrounds, n, split_bias)
        scenes.extend(
            make_scene(cls, place, scene_seed, size, split, PLANTED_BACKGROUNDS[cls], n_captions)
            for (cls, place), scene_seed in zip(pairs, scene_seeds(rng, n), strict=True)
        )
    return scenes
