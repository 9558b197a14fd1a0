"""The generate room's settings: how many sentences, how they are drawn, when an image has enough, what is kept.

They live apart from the decoders (:mod:`.sampling`, :mod:`.device_plan`,
:mod:`.stopping`, :mod:`.explain`) so that the command line reads their
defaults without loading torch. Commands that need another default say so in
their own settings (evaluation explains each image three times; mitigation
every training image), never in the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from texplain.errors import TexplainError
from texplain.text.config import WordConfig

DECODINGS = ("auto", "eager", "static")
"""``auto``: static on CUDA, else eager; ``eager`` and ``static`` force one decoder (the static one runs on CPUs too)."""

TOLERANCE_SHARE = 0.3
"""The share of the top-k words the default rule lets stay uncertain (:mod:`.stopping` says why)."""


@dataclass(frozen=True)
class StopRule:
    """When adaptive sampling stops an image (:mod:`.stopping` says why).

    k: the top words that must be settled. confidence: of the Wilson
    intervals. tolerance: top-k words allowed to overlap the best word
    outside; None: :data:`TOLERANCE_SHARE` of k, rounded (3 of 10, 1 of 3),
    so that a small k is not settled from the start. min_sentences: drawn
    before any stop.
    """

    k: int = 10
    confidence: float = 0.8
    tolerance: int | None = None
    min_sentences: int = 50

    def __post_init__(self) -> None:
        if self.tolerance is None and isinstance(self.k, int):
            object.__setattr__(self, "tolerance", round(TOLERANCE_SHARE * self.k))
        if self.k < 1 or self.tolerance < 0 or self.min_sentences < 1:
            raise TexplainError("stopping: k and min_sentences must be at least 1 and tolerance 0 or more")
        if not 0.0 < self.confidence < 1.0:
            raise TexplainError(f"stopping: confidence must be in (0, 1), got {self.confidence}")


@dataclass
class SamplingConfig:
    """How many sentences to sample from one prefix, and how.

    Attributes:
        num_samples: Sentences per prefix (the paper's N = 1000).
        top_p: Nucleus mass in (0, 1]: each token is drawn from the smallest
            set of most probable tokens whose probability reaches ``top_p``
            (the paper's 0.95); 1 samples from the full distribution.
        temperature: Logits are divided by this (> 0) before the nucleus is
            taken; 1 leaves the LM's distribution as it is.
        min_words: End-of-sentence is forbidden until a sentence has this
            many words. The paper's sentences have 20-30 words; the default
            is a caption's length (5-20), since a caption LM forced past its
            caption's end writes fragments of its prior.
        max_words: A sentence is cut where its ``max_words + 1``-th word would
            begin, so it never has more than ``max_words`` words.
        batch_size: Sentences decoded together, or ``"auto"``: 250 on CPUs,
            on GPUs as many as 40% of the free memory holds (at most 8192;
            :mod:`.device_plan`). Memory grows as batch_size x sentence length
            x the LM's cache width. Several images share a batch.
        seed: Seed of each image's generator (when the caller gives none),
            so that the same seed gives the same sentences.
        adaptive: Draw in rounds of ``round_size`` sentences and stop an image
            once its top words are settled (:mod:`.stopping`); ``num_samples``
            is then the most an image gets.
        round_size: Sentences an image draws per round when adaptive.
        stop: When an adaptive image is settled (:class:`StopRule`).
        max_tokens: Hard limit on tokens per sentence, against a model that
            keeps writing word pieces; ``None`` means three per word
            (``3 * max_words``). It is also kept within the LM's positions.
        decoding: ``"auto"`` (the static decoder on CUDA GPUs, the eager one
            elsewhere), ``"eager"`` or ``"static"``. Both draw the exact
            nucleus distribution, each deterministic for a seed on one device,
            but from different random numbers: their sentences differ.
    """

    num_samples: int = 1000
    top_p: float = 0.95
    temperature: float = 1.0
    min_words: int = 5
    max_words: int = 20
    batch_size: int | str = "auto"
    seed: int = 0
    max_tokens: int | None = None
    adaptive: bool = False
    round_size: int = 25
    stop: StopRule = field(default_factory=StopRule)
    decoding: str = "auto"

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise TexplainError(f"sampling: num_samples must be at least 1, got {self.num_samples}")
        if not 0.0 < self.top_p <= 1.0:
            raise TexplainError(f"sampling: top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0.0:
            raise TexplainError(f"sampling: temperature must be positive, got {self.temperature}")
        if self.min_words < 0:
            raise TexplainError(f"sampling: min_words must be at least 0, got {self.min_words}")
        if self.max_words < 1:
            raise TexplainError(f"sampling: max_words must be at least 1, got {self.max_words}")
        if self.min_words > self.max_words:
            raise TexplainError(f"sampling: min_words ({self.min_words}) is more than max_words ({self.max_words})")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise TexplainError(f"sampling: batch_size must be auto or at least 1, got {self.batch_size!r}")
        if self.decoding not in DECODINGS:
            raise TexplainError(f"sampling: decoding must be one of {', '.join(DECODINGS)}, got {self.decoding!r}")
        if self.max_tokens is not None and self.max_tokens < self.max_words:
            raise TexplainError(f"sampling: max_tokens ({self.max_tokens}) is less than max_words ({self.max_words})")
        if isinstance(self.stop, dict):
            self.stop = StopRule(**self.stop)
        if self.round_size < 1:
            raise TexplainError(f"sampling: round_size must be at least 1, got {self.round_size}")

    @property
    def token_budget(self) -> int:
        """Most tokens one sentence may have (before the LM's position limit)."""
        return self.max_tokens if self.max_tokens is not None else 3 * self.max_words


@dataclass
class ExplainConfig:
    """What one explanation holds.

    sampling: nucleus sampling settings (N, p, length, seed). words: how
    sentences become words (top_k is the number of words kept). examples:
    sample sentences kept in the JSON. word_cloud: draw the PNG.
    """

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    words: WordConfig = field(default_factory=WordConfig)
    examples: int = 5
    word_cloud: bool = True
