"""The analysis room's settings: how a data set is explained, its LM prior, its analysis and its suspects.

They live apart from the code (:mod:`.explain_dataset`, :mod:`.lm_prior`,
:mod:`.analyse`, :mod:`.suspects`) so that the command line reads their
defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig
from texplain.models.config import ExtractionConfig
from texplain.text.config import ClassWordConfig

KINDS = ("blank", "mean", "shuffled", "lm")
"""The kinds of null prefix (:mod:`.lm_prior`): a grey image's features, the mean feature, shuffled features, none (the LM alone)."""


@dataclass(frozen=True)
class PriorConfig:
    """Which null prefixes make the prior.

    kinds: any of ``blank``, ``mean``, ``shuffled``, ``lm``. shuffled: how many
    shuffled feature sets. pool: how many images' features the shuffled ones
    draw their coordinates from (memory is pool x T x D). seed: for the shuffle.
    samples: sentences per null prefix, or the data set's N when that is
    more. Each null prefix gets the data set's other sampling settings. The
    prior is sampled once per data set, and a suspect's z-score against it is
    bounded by its size: a few dozen sentences could not tell a word the LM
    says half the time from one it says a third of the time.
    """

    kinds: tuple[str, ...] = KINDS
    shuffled: int = 4
    pool: int = 32
    seed: int = 0
    samples: int = 200

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise TexplainError(f"prior: kinds must be among {', '.join(KINDS)}, got {', '.join(self.kinds) or 'none'}")
        if self.shuffled < 1 or self.pool < 2 or self.samples < 1:
            raise TexplainError("prior: shuffled and samples must be at least 1 and pool at least 2")


@dataclass
class SuspectRule:
    """When a non-class word is a suspect.

    Attributes:
        min_frequency: in at least this fraction of the sentences.
        min_lift: its odds at least this many times those after a null prefix
            (only where there is a prior). A modest bar: the z-score against
            the prior already asks for significance.
        min_z: (classes only) log-odds z against the other classes and against
            the LM prior both at least this.
        limit: suspects kept per class.
        confidence: level of the Wilson intervals.
    """

    min_frequency: float = 0.05
    min_lift: float = 1.25
    min_z: float = 1.96
    limit: int = 5
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_frequency <= 1.0 or self.min_lift < 0:
            raise TexplainError("suspects: min_frequency must be in [0, 1] and min_lift non-negative")
        if self.limit < 1 or not 0.0 < self.confidence < 1.0:
            raise TexplainError("suspects: limit must be at least 1 and confidence in (0, 1)")


GROUPINGS = ("label", "predicted")


@dataclass
class AnalysisConfig:
    """How a results folder is analysed.

    Attributes:
        by: pool images by their ``label`` (what the class's images evoke) or
            by the class the classifier ``predicted`` (what it sees when it
            says that class).
        top_words: words listed (and drawn) per class and split.
        suspects: when a word is a suspect, and how many are kept
            (:class:`SuspectRule`).
        compare: the two splits compared per class; None compares train and
            test when both are present.
        shifts: words listed per direction of a split comparison.
        examples: images shown per suspect (where the word is strongest).
        suspect_split: pool only this split for the suspects; None pools all.
    """

    by: str = "label"
    top_words: int = 20
    suspects: SuspectRule = field(default_factory=SuspectRule)
    compare: tuple[str, str] | None = None
    shifts: int = 10
    examples: int = 3
    suspect_split: str | None = None

    def __post_init__(self) -> None:
        if self.by not in GROUPINGS:
            raise TexplainError(f"analysis: by must be label or predicted, got {self.by!r}")
        if min(self.top_words, self.shifts, self.examples) < 1:
            raise TexplainError("analysis: top_words, shifts and examples must be at least 1")
        if self.compare is not None:
            self.compare = tuple(self.compare)
            if len(self.compare) != 2 or self.compare[0] == self.compare[1]:
                raise TexplainError(f"analysis: compare needs two different splits, got {self.compare!r}")


@dataclass
class DatasetExplainConfig:
    """How a data set is explained.

    explain: sampling, word counting and the example sentences kept per image.
    chunk_size: images per Parquet part (what a kill can cost to redo).
    class_words: how class names become class vocabularies (class mentions).
    prior: the null prefixes of the LM prior; None for no prior.
    allow_unknown_labels: explain images whose label is not one of the
    classifier's classes (otherwise an error: usually the wrong classifier).
    extraction: feature extraction settings.
    """

    explain: ExplainConfig = field(default_factory=lambda: ExplainConfig(word_cloud=False))
    chunk_size: int = 64
    class_words: ClassWordConfig = field(default_factory=ClassWordConfig)
    prior: PriorConfig | None = field(default_factory=PriorConfig)
    allow_unknown_labels: bool = False
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise TexplainError(f"chunk_size must be at least 1, got {self.chunk_size}")
