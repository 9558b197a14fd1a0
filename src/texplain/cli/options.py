"""Options that several commands share, each declared once, with one default.

Every command that samples sentences takes the same sampling options with the
same defaults as :class:`~texplain.generate.sampling.SamplingConfig` (a test
keeps them equal; they are repeated here as plain values so that building the
command line imports no model code). Only the number of sentences differs by
command, where one image's explanation is one of many (evaluation runs three
per image, mitigation one per training image): those commands say so in their
default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

SAMPLES = 1000
MAX_SAMPLES = 100_000
"""The most sentences per image (-n, and the cap of --samples auto): 100 times the paper's 1000.

A settled top 10 needs a few hundred sentences (docs/architecture.md); a
number past this bound is a slip, and would hold the run for days.
"""
MAX_SEED = 2**32 - 1
"""The largest --seed: every random generator texplain seeds (torch, numpy) takes 0 … 2**32 - 1."""
DEVICE_KINDS = ("cpu", "cuda", "mps")
TOP_P = 0.95
MIN_WORDS = 5
MAX_WORDS = 20
TOP_K = 20
STOP_K = 10
SEED = 0
DEVICE = "cpu"
SAMPLE_BATCH = "auto"

Translator = Annotated[Path, typer.Option(help="Translator checkpoint folder")]
ClassifierName = Annotated[str, typer.Option(
    "--classifier", "-c",
    help="timm:NAME, hf:ID, torchvision:NAME, efficientnet_lite0, a saved folder, or pkg.mod:factory")]
ClassifierOverride = Annotated[Optional[str], typer.Option(
    "--classifier", "-c", help="Default: the classifier the translator was trained for")]
TrustCode = Annotated[bool, typer.Option(
    "--trust-code", help="Let a classifier folder or translator run the Python code its recipe names, and a Hugging Face "
                         "model its own code (auto_map); only for models you trust")]
LMOverride = Annotated[Optional[str], typer.Option(help="Default: the language model the translator was trained for")]
Fp16 = Annotated[bool, typer.Option(help="Store features as float16 (half the disk; a store keeps the dtype it was made with)")]
FeatureLayer = Annotated[str, typer.Option(help="Module whose output (or NAME:input) is the feature; default: penultimate")]
Samples = Annotated[int, typer.Option("-n", "--num-samples", help="Sentences per image; with --samples auto, the most per image")]
SamplesMode = Annotated[Optional[str], typer.Option(
    "--samples", help="auto: draw in rounds and stop each image once its top words are settled; or a number (as -n)")]
StopK = Annotated[int, typer.Option(help="With --samples auto: the top words that must be settled before an image stops")]
TopP = Annotated[float, typer.Option(help="Nucleus mass: each token is drawn from the most probable tokens holding this much")]
MinWords = Annotated[int, typer.Option(help="Words a sentence has before it may end")]
MaxWords = Annotated[int, typer.Option(help="Most words per sentence")]
TopK = Annotated[int, typer.Option(help="Dominant words kept per image")]
ClassWords = Annotated[Optional[Path], typer.Option(help="JSON/YAML of extra words per class (they count as the class)")]
WordNet = Annotated[bool, typer.Option(help="Expand class names with WordNet synonyms, hyponyms, hypernyms")]


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
    mode: str | None, samples: int, top_p: float, min_words: int, max_words: int, seed: int, stop_k: int = STOP_K,
    default: int = SAMPLES, **more,
):
    """The :class:`~texplain.generate.sampling.SamplingConfig` the shared options describe (imported when called).

    ``mode`` is ``--samples``: None or a number gives ``-n``-style fixed
    sampling (a number given both ways must agree; ``default`` is the
    command's ``-n`` default), ``auto`` adaptive sampling with ``-n`` as the cap.
    """
    from texplain.errors import TexplainError
    from texplain.generate.sampling import SamplingConfig
    from texplain.generate.stopping import StopRule

    adaptive = mode is not None and mode.strip().lower() == "auto"
    if mode is not None and not adaptive:
        try:
            count = int(mode)
        except ValueError:
            raise TexplainError(f"--samples {mode!r}: give auto or a number of sentences per image") from None
        if samples != default and samples != count:
            raise TexplainError(f"--samples {count} and -n {samples} disagree: give the number of sentences once")
        samples = count
    if not 1 <= samples <= MAX_SAMPLES:
        raise TexplainError(f"sentences per image must be at least 1 and at most {MAX_SAMPLES:,}, got {samples}"
                            + (" (the cap of --samples auto)" if adaptive else ""))
    return SamplingConfig(num_samples=samples, top_p=top_p, min_words=min_words, max_words=max_words, seed=seed,
                          adaptive=adaptive, stop=StopRule(k=stop_k), **more)


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
    """The :class:`~texplain.text.class_vocabulary.ClassWordConfig` of ``--class-words`` and ``--wordnet``."""
    from texplain.text.class_vocabulary import ClassWordConfig, load_overrides

    return ClassWordConfig(wordnet=wordnet, overrides=load_overrides(class_words) if class_words else {})
