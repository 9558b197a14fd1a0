"""The demo's settings: the synthetic world's sizes, the models' epochs, how its images are explained.

They live apart from :mod:`.run` so that the command line reads their
defaults without loading torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from texplain.errors import TexplainError
from texplain.generate.config import SamplingConfig

DEFAULT_SHORTCUT_CLASSES = ("bird", "car", "dog")
"""The demo's classes: each tied to its planted background in training (:data:`~.splits.PLANTED_BACKGROUNDS`)."""

MIN_TRAIN_PER_CLASS = 20
"""Labelled train images per class below which the classifier cannot learn the split."""


def _is_timm_model(name: str) -> bool:
    """Whether timm can build ``name`` (checked before the long steps, not after them)."""
    import timm

    return timm.is_model(name)


@dataclass
class DemoConfig:
    """Sizes and seeds of the demo; the defaults finish in about two minutes on two CPU cores.

    classifier: any timm architecture name, built untrained at
    ``image_size`` (the default ``resnet10t``, a small CNN), or ``vit``, a
    small ViT whose (P+1) x D tokens exercise the token path; the small ViT
    learns only backgrounds, so its balanced control learns nothing either.
    pretrain_epochs: when above 0, the classifier first learns the objects of
    the captioned scenes (every class on every background: the demo's stand-in
    for ImageNet pretraining), then its head is replaced and it is trained on
    the biased split for ``classifier_epochs``, as a practitioner fine-tunes a
    pretrained model. The defaults (``resnet10t``, 8 and 10 epochs) make a
    Waterbirds analogue: right on 54-67% of the balanced test (seeds 0-2;
    chance is a third), 7-13% on its worst group, 97% when trained balanced.
    Its features say the world's places even for the null prefixes that go
    through the translator (seed 2 trained on one thread: the grey image says
    "sand" in 82% of its sentences, the mean 88%, dog's images 76%), which is
    why a suspect is checked against the null prefix that says it least, the
    LM alone among them (:mod:`texplain.analysis.lm_prior`).
    caption_images: captioned scenes for the LM and the translator.
    train_images, test_images: the labelled split (train biased, test balanced).
    explained_train: a seeded sample of the train split explained beside the
    test split, so that the report compares the two (0: the test split alone).
    bias: fraction of each class's train images on its planted background;
    ``balanced=True`` makes train balanced (the control). sampling: how each
    explained image's sentences are drawn (a few: see
    :class:`~texplain.generate.config.SamplingConfig`, whose ``adaptive``
    makes ``num_samples`` the most); its seed is always the demo's ``seed``.
    The epochs are for the classifier, LM and translator.
    """

    out: Path = Path("texplain-demo")
    seed: int = 0
    image_size: int = 64
    classes: tuple[str, ...] = DEFAULT_SHORTCUT_CLASSES
    classifier: str = "resnet10t"
    pretrain_epochs: int = 8
    caption_images: int = 1200
    train_images: int = 600
    test_images: int = 270
    explained_train: int = 90
    bias: float = 0.95
    balanced: bool = False
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=20))
    classifier_epochs: int = 10
    lm_epochs: int = 2
    translator_epochs: int = 4
    fresh: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.classes = tuple(self.classes)
        sampling = SamplingConfig(**self.sampling) if isinstance(self.sampling, dict) else self.sampling
        self.sampling = replace(sampling, seed=self.seed)
        if self.train_images < MIN_TRAIN_PER_CLASS * len(self.classes):
            raise TexplainError(
                f"demo: train_images={self.train_images} is too small to train on; "
                f"use at least {MIN_TRAIN_PER_CLASS * len(self.classes)} ({MIN_TRAIN_PER_CLASS} per class)"
            )
        if self.test_images < 3 * len(self.classes) ** 2 or self.caption_images < 100:
            raise TexplainError("demo: test_images must cover every group a few times and caption_images be at least 100")
        if self.image_size < 32:
            raise TexplainError(f"demo: image_size={self.image_size} is too small; use 32 or more")
        if self.classifier != "vit" and not _is_timm_model(self.classifier):
            raise TexplainError(f"demo: unknown classifier {self.classifier!r}; use vit or a timm architecture (e.g. resnet10t)")
        if not 0 <= self.explained_train <= self.train_images:
            raise TexplainError(f"demo: explained_train must be between 0 and train_images ({self.train_images})")
        if self.pretrain_epochs < 0:
            raise TexplainError("demo: pretrain_epochs must be 0 (no pretraining) or more")
        if min(self.classifier_epochs, self.lm_epochs, self.translator_epochs) < 1:
            raise TexplainError("demo: every epochs setting must be at least 1")

    def fingerprint(self) -> str:
        """A hash of every setting that changes the results (not out, fresh, device)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("out", "fresh", "device")}
        return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
