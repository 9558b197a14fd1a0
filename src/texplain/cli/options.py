"""Options that several commands share: one name per idea, and every default read from the command's settings.

A setting's default is declared once, in its settings dataclass (each room's
``config.py``: :class:`~texplain.generate.config.SamplingConfig`,
:class:`~texplain.evaluation.config.EvaluateConfig`, ...). A command reads
the defaults of its own settings (:func:`defaults`) and shows them in its
help; where a command needs another default (evaluation explains each image
three times, mitigation every training image) its settings say so, never the
command line. The settings modules import no model code, so ``texplain
--help`` starts without torch. ``tests/test_cli_options.py`` compares every
command's defaults with its settings; ``docs/cli.md`` is the table.

The same idea has the same option name in every command. Names that changed
stay accepted for one release, hidden from the help (:data:`OLD_NAMES`):
:class:`Command` spells them into the new ones before the options are
parsed, and one given both ways with different values is one error line.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from texplain.generate.config import SamplingConfig

MAX_SAMPLES = 100_000
"""The most sentences per image (--samples N, and N of --samples auto:N): 100 times the paper's 1000.

A settled top 10 needs a few hundred sentences (docs/architecture.md); a
number past this bound is a slip, and would hold the run for days.
"""
MAX_SEED = 2**32 - 1
"""The largest --seed: every random generator texplain seeds (torch, numpy) takes 0 … 2**32 - 1."""
DEVICE_KINDS = ("cpu", "cuda", "mps")
DEVICE = "cpu"
"""--device of the commands whose settings have no device (they load models with :func:`~texplain.models.explainer.load_explainer`)."""
UsageError = typer.BadParameter.__base__
"""Click's UsageError, from the Click that this typer uses (typer vendors Click since 0.26): exit 2 with one line."""
SAMPLING = "Sampling"
MASKS = "Masks"
"""Help panels: the options every sampling command shares, and how a region is found and hidden."""

SAMPLES_OLD = {"-n": "--samples", "--num-samples": "--samples"}
OLD_NAMES: dict[str, dict[str, str]] = {
    "explain": {**SAMPLES_OLD, "--top-k": "--top-words"},
    "explain-dataset": SAMPLES_OLD,
    "evaluate": {**SAMPLES_OLD, "--top-k": "--top-words"},
    "mitigate": {**SAMPLES_OLD, "--data": "DATA", "--localise": "--mask-localise", "--heat": "--mask-heat",
                 "--cam-layer": "--mask-layer", "--grid": "--mask-grid", "--window": "--mask-window",
                 "--threshold": "--mask-threshold", "--fill": "--mask-fill"},
    "demo": SAMPLES_OLD,
    "rating-export": {"--k": "--top-words"},
}
"""Per command, each old option name and the new one (a name without dashes is the positional argument).

Accepted until the next release, and hidden from the help.
"""


def defaults(settings: type) -> SimpleNamespace:
    """A settings dataclass's field defaults, as attributes, without running its checks.

    The checks may load libraries (the demo's asks timm whether its
    architecture exists); nested settings come from their factories, checked.
    """
    values = {}
    for item in dataclasses.fields(settings):
        if item.default is not dataclasses.MISSING:
            values[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            values[item.name] = item.default_factory()
    return SimpleNamespace(**values)


def check_samples(value: str) -> str:
    """``--samples``, checked as it is parsed: ``N``, ``auto`` or ``auto:N``, N from 1 to :data:`MAX_SAMPLES`."""
    text = value.strip().lower()
    if text == "auto":
        return text
    match = re.fullmatch(r"(auto:)?(\d+)", text)
    if match is None:
        raise typer.BadParameter(f"{value!r}: give a number of sentences per image, auto or auto:N")
    if not 1 <= int(match[2]) <= MAX_SAMPLES:
        raise typer.BadParameter(f"{value!r}: sentences per image must be at least 1 and at most {MAX_SAMPLES:,}")
    return f"{match[1] or ''}{int(match[2])}"


def samples_default(sampling: SamplingConfig) -> str:
    """The ``--samples`` value that gives these settings' number of sentences and adaptivity."""
    return f"auto:{sampling.num_samples}" if sampling.adaptive else str(sampling.num_samples)


Translator = Annotated[Path, typer.Option(help="Translator checkpoint folder")]
ClassifierName = Annotated[str, typer.Option(
    "--classifier", "-c",
    help="timm:NAME, hf:ID, torchvision:NAME, efficientnet_lite0, a saved folder, or pkg.mod:factory")]
ClassifierOverride = Annotated[Optional[str], typer.Option(
    "--classifier", "-c", help="As train's --classifier; default: the classifier the translator was trained for")]
TrustCode = Annotated[bool, typer.Option(
    "--trust-code", help="Let a classifier folder or translator run the Python code its recipe names, and a Hugging Face "
                         "model its own code (auto_map); only for models you trust")]
LMOverride = Annotated[Optional[str], typer.Option(help="Default: the language model the translator was trained for")]
Fp16 = Annotated[bool, typer.Option(help="Store features as float16 (half the disk; a store keeps the dtype it was made with)")]
FeatureLayer = Annotated[str, typer.Option(help="Module whose output (or NAME:input) is the feature; default: penultimate")]
LABELLED_HELP = "Labelled images: class folders, BAR metadata.json, or CSV/JSONL with path, label, split, group"
LabelledData = Annotated[Path, typer.Argument(metavar="DATA", help=LABELLED_HELP)]
JsonFile = Annotated[Optional[Path], typer.Option("--json", help="Also write the figures to this JSON file")]

Samples = Annotated[str, typer.Option(
    callback=check_samples, rich_help_panel=SAMPLING,
    help="Sentences per image: N; auto (drawn in rounds, each image stops once its top words are settled, at most "
         "this command's default N) or auto:N (at most N)")]
StopK = Annotated[int, typer.Option(
    rich_help_panel=SAMPLING, help="With --samples auto: the top words that must be settled before an image stops")]
TopP = Annotated[float, typer.Option(
    rich_help_panel=SAMPLING, help="Nucleus mass: each token is drawn from the most probable tokens holding this much")]
MinWords = Annotated[int, typer.Option(rich_help_panel=SAMPLING, help="Words a sentence has before it may end")]
MaxWords = Annotated[int, typer.Option(rich_help_panel=SAMPLING, help="Most words per sentence")]
SampleBatch = Annotated[str, typer.Option(
    rich_help_panel=SAMPLING,
    help="Sentences decoded together, or auto: 250 on CPUs, as many as 40% of the GPU's free memory holds")]
TopWords = Annotated[int, typer.Option(help="Dominant words kept per image")]
ClassWords = Annotated[Optional[Path], typer.Option(help="JSON/YAML of extra words per class (they count as the class)")]
WordNet = Annotated[bool, typer.Option(help="Expand class names with WordNet synonyms, hyponyms, hypernyms")]
MinFrequency = Annotated[float, typer.Option(
    help="A suspect (a class's, or an image's dominant word) is in at least this fraction of the sentences")]
MinLift = Annotated[float, typer.Option(help="A suspect's odds are at least this many times those after the LM prior's null prefixes")]
MaskHeat = Annotated[str, typer.Option(
    rich_help_panel=MASKS,
    help="How a word's region is found: keep (each window of the grid scored alone), gradcam, or occlusion "
         "(the grid's cells hidden in turn)")]
MaskThreshold = Annotated[float, typer.Option(rich_help_panel=MASKS, help="Heat-map level (0-1] from which the region is masked")]
MaskLayer = Annotated[str, typer.Option(
    rich_help_panel=MASKS,
    help="With --mask-heat gradcam, where its map is taken: auto (the deepest map of 8 x 8 or more), features, "
         "or a module name")]
MaskGrid = Annotated[int, typer.Option(rich_help_panel=MASKS, help="keep and occlusion: grid cells per side")]
MaskWindow = Annotated[int, typer.Option(rich_help_panel=MASKS, help="keep: cells a side of the window kept alone")]


def check_device(ctx: typer.Context, value: str) -> str:
    """``--device``, checked as it is parsed: a kind torch runs on here (imported only then).

    With ``--engine ray`` the device is the actors', on other machines:
    only its kind is checked here.
    """
    import torch

    try:
        device = torch.device(value)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_KINDS:
        raise typer.BadParameter(f"{value!r}: choose cpu, cuda, cuda:N or mps")
    if ctx.params.get("engine") == "ray":
        return value
    if device.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(f"{value}: this machine has no CUDA GPU that torch can use; use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise typer.BadParameter(f"{value}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(f"{value}: this machine has no MPS (Apple GPU) that torch can use; use cpu")
    return value


Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed: the same seed gives the same sentences")]
Device = Annotated[str, typer.Option(callback=check_device, help="cpu, cuda, cuda:1, mps")]


def sampling_config(
    base: SamplingConfig, samples: str, stop_k: int | None = None, sample_batch: str | None = None, **changes
) -> SamplingConfig:
    """The command's sampling settings ``base`` with what its options changed (``changes``: top_p, min_words, ...).

    ``samples`` is ``--samples`` (checked by :func:`check_samples`): ``N``,
    ``auto`` (adaptive, at most ``base.num_samples``) or ``auto:N``. Settings
    no option names (temperature, rounds, decoding) stay ``base``'s.
    """
    adaptive = samples.startswith("auto")
    count = int(samples.removeprefix("auto:")) if samples != "auto" else base.num_samples
    if stop_k is not None and stop_k != base.stop.k:
        changes["stop"] = dataclasses.replace(base.stop, k=stop_k, tolerance=None)  # the tolerance follows k
    if sample_batch is not None:
        changes["batch_size"] = batch_size(sample_batch, "--sample-batch")
    return dataclasses.replace(base, num_samples=count, adaptive=adaptive, **changes)


def batch_size(value: str, option: str) -> int | str:
    """A batch-size option's value: ``auto`` or a whole number of at least 1 (else one error line)."""
    from texplain.errors import TexplainError

    if value.strip().lower() == "auto":
        return "auto"
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise TexplainError(f"{option} {value!r}: give auto or a whole number of at least 1")
    return size


def class_word_config(class_words: Path | None, wordnet: bool):
    """The :class:`~texplain.text.config.ClassWordConfig` of ``--class-words`` and ``--wordnet``."""
    from texplain.text.class_vocabulary import load_overrides
    from texplain.text.config import ClassWordConfig

    return ClassWordConfig(wordnet=wordnet, overrides=load_overrides(class_words) if class_words else {})


class Command(TyperCommand):
    """A command that accepts its old option names (:data:`OLD_NAMES`), spelt into the new ones before parsing."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, new_names(args, OLD_NAMES.get(self.name or "", {})))


def new_names(args: list[str], old_names: dict[str, str]) -> list[str]:
    """``args`` with each old option name (``--old V``, ``--old=V``, ``-oV``) spelt as the new one.

    Given both ways, the values must agree (one error line otherwise), except
    that ``--samples auto`` with ``-n N`` means ``--samples auto:N``, as it
    did before. An old name of the positional argument leaves its value alone
    in its place.
    """
    out: list[str] = []
    seen: dict[str, list[tuple[str, str, int]]] = {}  # new name → (name given, value, index of the value in out)
    new_options = {new for new in old_names.values() if new.startswith("-")}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out.extend(args[i:])
            break
        name, value, width = _split(token, args[i + 1] if i + 1 < len(args) else None, old_names.keys() | new_options)
        if name is None or value is None:
            out.append(token)
            i += 1
            continue
        new = old_names.get(name, name)
        if new.startswith("-"):
            out.append(new)
        seen.setdefault(new, []).append((name, value, len(out)))
        out.append(value)
        i += width
    for new, given in seen.items():
        if len({name for name, _, _ in given}) > 1:
            _agree(new, given, out)
    return out


def _split(token: str, following: str | None, names: set[str]) -> tuple[str | None, str | None, int]:
    """(option name, its value, tokens used) when ``token`` is one of ``names``; else (None, None, 1)."""
    if token in names:
        return token, following, 2
    head, equals, tail = token.partition("=")
    if equals and head in names and head.startswith("--"):
        return head, tail, 1
    short = token[:2]
    if short in names and not short.startswith("--") and len(token) > 2:
        return short, token[2:], 1
    return None, None, 1


def _agree(new: str, given: list[tuple[str, str, int]], out: list[str]) -> None:
    """Check that one option given by several names has one value, and give it to each (``auto`` and N: ``auto:N``)."""
    values = {value for _, value, _ in given}
    numbers = [value.strip() for value in values if value.strip().isdigit()]
    if new == "--samples" and len(values) == 2 and len(numbers) == 1 and "auto" in {v.strip().lower() for v in values}:
        values = {f"auto:{numbers[0]}"}
    if len(values) > 1:
        spelled = " and ".join(f"{name} {value}" for name, value, _ in given)
        old = ", ".join(sorted({name for name, _, _ in given if name != new}))
        raise UsageError(f"{spelled} disagree: {old} is the old name of {new}; give the value once")
    final = values.pop()
    for _, _, index in given:
        out[index] = final
