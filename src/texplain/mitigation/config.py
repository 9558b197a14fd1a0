"""The mitigation room's settings: which training images are selected, how they are masked, how models are compared.

They live apart from the code (:mod:`.selection`, :mod:`.masks`,
:mod:`.harness`) so that the command line reads their defaults without
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
"""``shuffle`` (the region of a random training image), the image-based fills of
:func:`~texplain.attribution.gradcam.mask_image` (its ``FILLS``) and ``zero`` (the preprocessing's mean)."""
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


@dataclass
class SelectionConfig:
    """How training images are explained and judged problematic.

    sampling: how each image's sentences are drawn (a few: every training
    image is explained). min_frequency: a dominant word is in at least this
    fraction of the image's sentences. min_lift: and its odds at least this
    many times those after a null prefix (the lift of
    :mod:`texplain.analysis.lm_prior`); both default to a class's suspect
    rule (:class:`~texplain.analysis.config.SuspectRule`). prior: which null
    prefixes make the LM prior. class_words: how class names become
    vocabularies.
    """

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(num_samples=20))
    min_frequency: float = SuspectRule.min_frequency
    min_lift: float = SuspectRule.min_lift
    prior: PriorConfig = field(default_factory=PriorConfig)
    class_words: ClassWordConfig = field(default_factory=ClassWordConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_frequency <= 1.0 or self.min_lift < 0:
            raise TexplainError("selection: min_frequency must be in [0, 1] and min_lift non-negative")

    def explain_config(self) -> ExplainConfig:
        """The sampling and word settings every training image (and the prior) is explained with."""
        return ExplainConfig(sampling=self.sampling, words=WordConfig(top_k=50), word_cloud=False)


METHODS = ("erm", "randmask", "randmask_all", "masktune", "jtt", "dfr", "texplain")


@dataclass
class MitigateConfig:
    """Everything the harness needs besides the models and the data.

    methods: which of :data:`METHODS` to run. seeds: one fine-tuning run per
    seed and method. finetune: epochs, lr, batch and decay of every
    fine-tuning (its seed is replaced per run). masktune_epochs: MaskTune's
    fine-tuning epochs. jtt_upweight: how many times JTT repeats an error.
    dfr_epochs, dfr_lr: DFR's last-layer training. min_per_class:
    fine-tuning sets need this many samples of every class. examples: masked
    examples saved for the report. trust_code: let the classifier folder's
    recipe run code from outside texplain
    (:func:`~texplain.models.classifiers.load_classifier`).
    """

    selection: SelectionConfig = field(default_factory=SelectionConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    finetune: ClassifierTrainConfig = field(default_factory=lambda: ClassifierTrainConfig(epochs=3, batch_size=32, lr=1e-4))
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    masktune_epochs: int = 1
    jtt_upweight: int = 6
    dfr_epochs: int = 30
    dfr_lr: float = 1e-2
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
        if self.masktune_epochs < 1 or self.min_per_class < 0 or self.examples < 0:
            raise TexplainError("mitigation: masktune_epochs must be >= 1, min_per_class and examples >= 0")
        if self.jtt_upweight < 1 or self.dfr_epochs < 1 or self.dfr_lr <= 0:
            raise TexplainError("mitigation: jtt_upweight and dfr_epochs must be >= 1 and dfr_lr > 0")

    def to_json(self) -> dict:
        settings = asdict(self)
        settings["selection"]["class_words"] = self.selection.class_words.to_json()
        return settings
