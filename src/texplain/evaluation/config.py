"""The evaluation room's settings: what ``evaluate`` samples and measures.

They live apart from :mod:`.harness` so that the command line reads their
defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.mitigation.config import MASK_FILLS, MaskConfig
from texplain.text.config import WordConfig

RATING_WORDS = 10
"""Top words per image a rater judges in the human study (``rating-export``): the paper's precision@10."""

CAUSAL_FILLS = ("zero", *(fill for fill in MASK_FILLS if fill not in ("shuffle", "zero")))
"""Fills of one image on its own: ``zero`` (the preprocessing's mean, no colour of the image) and the image-based ones."""


NULL_PREFIXES: dict[str, str] = {
    "mean": "translator applied to the mean feature of the evaluated images (knows the dataset, not the image)",
    "zero": "translator applied to all-zero features",
    "empty": "the LM with an empty prefix (the translator's start alone: the end-of-sentence token of a caption LM)",
}


@dataclass
class EvaluateConfig:
    """What ``evaluate`` samples and measures.

    sampling: N, p, sentence length and seed for every explanation (the
    baselines use the same); 50 sentences, since each image is explained
    three times (its own features, the null prefix, shuffled), the rest as
    :class:`~texplain.generate.config.SamplingConfig`'s defaults. words: how sentences become words. precision_k:
    the k of precision@k. correlation_k: top words per side in the rank
    correlations. null_prefix: ``mean``, ``zero`` or ``empty`` (see
    :data:`NULL_PREFIXES`). minilm: score MiniLM cosine. bert: a BERT-like
    folder for the paper's mean-pooled cosine (None: skipped with a note).
    sanity_images, causal_images: how many of the images the sanity and causal
    checks use (0 turns them off); cascade: run the randomisation cascade.
    mask: how the causal check finds the word's region and masks it
    (mitigation's :class:`~texplain.mitigation.config.MaskConfig`, filled
    with ``zero`` by default and only with one of :data:`CAUSAL_FILLS`; the
    region is always the word's). seed: shuffling,
    weight randomisation and noise masks.
    """

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=50))
    words: WordConfig = field(default_factory=WordConfig)
    precision_k: int = 10
    correlation_k: int = 10
    null_prefix: str = "mean"
    minilm: bool = True
    bert: Path | None = None
    sanity_images: int = 8
    cascade: bool = True
    causal_images: int = 8
    mask: MaskConfig = field(default_factory=lambda: MaskConfig(fill="zero"))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.null_prefix not in NULL_PREFIXES:
            raise TexplainError(f"evaluate: null prefix {self.null_prefix!r}: choose one of {', '.join(NULL_PREFIXES)}")
        if self.precision_k < 1 or self.correlation_k < 2:
            raise TexplainError("evaluate: precision_k must be at least 1 and correlation_k at least 2")
        if self.sanity_images < 0 or self.causal_images < 0:
            raise TexplainError("evaluate: sanity_images and causal_images must be 0 or more")
        if self.bert is not None and not Path(self.bert).exists():
            raise TexplainError(f"evaluate: --bert {self.bert}: no such folder")
        if self.mask.fill not in CAUSAL_FILLS:
            raise TexplainError(f"evaluate: mask fill {self.mask.fill!r}: choose one of {', '.join(CAUSAL_FILLS)}")
        if self.mask.localise != "word":
            raise TexplainError("evaluate: the causal check masks the word's region (mask localise 'word')")

    @property
    def explain(self) -> ExplainConfig:
        return ExplainConfig(sampling=self.sampling, words=self.words, word_cloud=False)

