"""The mitigation room's settings: which training images are selected, how they are masked, how models are compared.

They live apart from the code (:mod:`.selection`, :mod:`.masks`,
:mod:`.bench`) so that the command line reads their defaults without
loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from texplain.analysis.config import PriorConfig, SuspectRule
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.text.config import ClassWordConfig, WordConfig
from texplain.training.config import ClassifierTrainConfig

LOCALISERS = ("word", "class")
MASK_FILLS = ("shuffle", "mean", "blur", "noise", "zero")
"""Every fill of :mod:`texplain.attribution.fills` (its ``FILLS``), named here so that the command line needs no torch."""
HEAT_METHODS = ("keep", "gradcam", "occlusion")


@dataclass
class MaskConfig:
    """Where and how a sample is masked.

    localise: ``word`` (the non-class word, TExplain's) or ``class`` (the
    labelled class's logit, MaskTune's). heat: ``keep`` (each ``window`` x
    ``window`` window of a ``grid`` x ``grid`` grid scored alone),
    ``gradcam`` or ``occlusion`` (hiding each cell of the grid in turn).
    layer: where Grad-CAM's map is taken: ``auto`` (the deepest stage with a map of at
    least :data:`~.masks.MIN_SIDE` cells a side), ``features`` (the classifier's
    feature layer) or a module name. threshold: the masked region is where the
    heat map reaches it. fill: one of :data:`MASK_FILLS` (see :mod:`.masks`).
    """

    localise: str = "word"
    threshold: float = 0.5
    fill: str = "shuffle"
    heat: str = "keep"
    layer: str = "auto"
    grid: int = 8
    window: int = 2

    def __post_init__(self) -> None:
        if self.localise not in LOCALISERS:
            raise TexplainError(f"mask localise {self.localise!r}: choose word or class")
        if self.fill not in MASK_FILLS:
            raise TexplainError(f"mask fill {self.fill!r}: choose one of {', '.join(MASK_FILLS)}")
        if not 0.0 < self.threshold <= 1.0:
            raise TexplainError(f"mask threshold must be in (0, 1], got {self.threshold}")
        if self.heat not in HEAT_METHODS or self.grid < 2:
            raise TexplainError(f"mask heat {self.heat!r}: choose {', '.join(HEAT_METHODS)} (grid at least 2)")
        if self.heat == "keep" and not 1 <= self.window < self.grid:
            raise TexplainError(f"mask window {self.window}: keep needs at least 1 cell and fewer than the grid's {self.grid}")
        if not self.layer.strip():
            raise TexplainError("mask layer: give auto, features or a module name")

    def where(self, layer: str | None) -> str:
        """Where the heat map comes from, in words; ``layer`` is Grad-CAM's module (None: the feature layer)."""
        if self.heat == "gradcam":
            return f"Grad-CAM at {layer or 'the feature layer'}"
        if self.heat == "occlusion":
            return f"each cell of the {self.grid} x {self.grid} grid hidden"
        return f"each {self.window} x {self.window}-cell window of the {self.grid} x {self.grid} grid kept alone"


SELECTION_RULES = ("auto", "suspects", "not-class")
"""How training samples are picked (:mod:`.selection`)."""


@dataclass
class SelectionConfig:
    """How training images are explained and judged shortcut-reliant.

    sampling: how each image's sentences are drawn (a few: every training
    image is explained). min_frequency: a dominant word is in at least this
    fraction of the image's sentences. min_lift: and its odds at least this
    many times those after a null prefix (the lift of
    :mod:`texplain.analysis.lm_prior`); both default to a class's suspect
    rule (:class:`~texplain.analysis.config.SuspectRule`). prior: which null
    prefixes make the LM prior. class_words: how class names become
    vocabularies. rule: one of :data:`SELECTION_RULES` (see
    :mod:`.selection`). top: ``suspects`` picks a sample whose first ``top``
    dominant words hold a suspect; threshold: or, when set, whose sentences
    say a suspect at least this often (lift not asked). suspects: the
    class-level rule for suspects.
    """

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=20))
    min_frequency: float = SuspectRule.min_frequency
    min_lift: float = SuspectRule.min_lift
    prior: PriorConfig = field(default_factory=PriorConfig)
    class_words: ClassWordConfig = field(default_factory=ClassWordConfig)
    rule: str = "auto"
    top: int = 3
    threshold: float | None = None
    suspects: SuspectRule = field(default_factory=SuspectRule)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_frequency <= 1.0 or self.min_lift < 0:
            raise TexplainError("selection: min_frequency must be in [0, 1] and min_lift non-negative")
        if self.rule not in SELECTION_RULES:
            raise TexplainError(f"selection rule {self.rule!r}: choose {', '.join(SELECTION_RULES)}")
        if self.top < 1 or (self.threshold is not None and not 0.0 < self.threshold <= 1.0):
            raise TexplainError("selection: top must be at least 1 and the threshold in (0, 1]")

    def explain_config(self) -> ExplainConfig:
        """The sampling and word settings every training image (and the prior) is explained with."""
        return ExplainConfig(sampling=self.sampling, words=WordConfig(top_k=50), word_cloud=False)


METHODS = ("erm", "randmask", "randmask_all", "masktune", "jtt", "dfr", "texplain")
"""Every method, in the table's order (:mod:`.runner` maps each to its file)."""


@dataclass
class MitigateConfig:
    """Everything the methods need besides the models and the data.

    methods: which of :data:`METHODS` to run. seeds: one fine-tuning
    run per seed and method. finetune: what learns (``trainable``: the last
    stages by default, at a tenth of the head's lr), at most how many epochs,
    lr, batch, decay and patience of every fine-tuning (its seed is replaced
    per run). holdout: the share of the training split held out for early
    stopping and DFR (:mod:`.holdout`). keep_originals: TExplain and
    RandMask fine-tune on the original images with the masked ones added as
    copies, rather than in their place. spread_masks: TExplain also masks
    images of the less-masked classes, with borrowed maps, until every
    class has the same share masked (:mod:`.spread`); RandMask masks as many.
    spare_class: TExplain never masks the region of the image's most-said
    class word (:func:`~.masks.spare_maps`), so the object beside its
    shortcut stays seen. masktune_epochs: MaskTune's
    fine-tuning epochs (one, as MaskTune). jtt_epochs: how long JTT's
    identification model trains (briefly, so that it errs); jtt_upweight:
    how many times JTT counts an error. dfr_steps, dfr_lr, dfr_subsets:
    DFR's logistic regression on each balanced subset (full-batch steps and
    learning rate), and how many subsets are averaged. min_per_class: fine-tuning sets need this many samples of
    every class. examples: masked examples saved for the report.
    trust_code: let the classifier folder's recipe run code from outside
    texplain (:func:`~texplain.models.classifiers.load_classifier`).
    """

    selection: SelectionConfig = field(default_factory=SelectionConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    finetune: ClassifierTrainConfig = field(default_factory=lambda: ClassifierTrainConfig(
        epochs=5, batch_size=32, lr=1e-3, trainable="last-stages", backbone_lr=0.1))
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    holdout: float = 0.15
    keep_originals: bool = False
    spread_masks: bool = False
    spare_class: bool = False
    masktune_epochs: int = 1
    jtt_epochs: int = 1
    jtt_upweight: int = 6
    dfr_steps: int = 300
    dfr_lr: float = 1e-2
    dfr_subsets: int = 10
    min_per_class: int = 1
    examples: int = 6
    device: str = "cpu"
    trust_code: bool = False

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.seeds = tuple(self.seeds)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise TexplainError(f"mitigation: unknown method {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise TexplainError("mitigation: give at least one seed, each once")
        if min(self.masktune_epochs, self.jtt_epochs, self.jtt_upweight, self.dfr_steps, self.dfr_subsets) < 1:
            raise TexplainError("mitigation: masktune_epochs, jtt_epochs, jtt_upweight, dfr_steps and dfr_subsets must be >= 1")
        if self.min_per_class < 0 or self.examples < 0 or self.dfr_lr <= 0:
            raise TexplainError("mitigation: min_per_class and examples must be >= 0 and dfr_lr > 0")
        if self.spare_class and self.mask.localise != "word":
            raise TexplainError("mitigation: spare_class takes the class word's region out of the shortcut word's; "
                                "it needs mask localise word")
        if not 0.0 <= self.holdout < 1.0:
            raise TexplainError(f"mitigation: holdout must be in [0, 1), got {self.holdout}")

    def to_json(self) -> dict:
        settings = asdict(self)
        settings["selection"]["class_words"] = self.selection.class_words.to_json()
        return settings
