"""The file-level steps behind the command line: read names and paths, run the library.

Each request dataclass mirrors one command's options; each function turns it
into library calls (load the classifier and LM by name, read captions,
extract features into the cache, train or explain). Kept apart from
``cli.py`` so the same steps can be called from Python or from the demo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from texplain.classifiers import load_classifier
from texplain.data.captions import CaptionPair, read_captions
from texplain.errors import TexplainError
from texplain.explain import ExplainConfig, explain_images
from texplain.features import ExtractionConfig, extract_features
from texplain.images import find_images
from texplain.lm import load_lm
from texplain.sampling import SamplingConfig
from texplain.train import History, Phase, TrainConfig, train_translator
from texplain.translator import Provenance, Translator, TranslatorConfig, load_translator
from texplain.words import WordConfig

log = logging.getLogger(__name__)


@dataclass
class TrainRequest:
    """Everything ``texplain train`` needs; see the command's help for each field."""

    classifier: str
    lm: str
    captions: list[Path]
    out: Path
    features: Path | None = None
    finetune_captions: list[Path] = field(default_factory=list)
    split: str | None = "train"
    dev_split: str | None = "dev"
    epochs: int = 20
    finetune_epochs: int = 5
    lr: float = 1e-3
    finetune_lr: float = 3e-4
    batch_size: int = 64
    prefix_len: int = 10
    hidden: int = 512
    mode: str = "auto"
    feature_layer: str = ""
    fp16: bool = False
    limit: int | None = None
    resume: bool = False
    seed: int = 0
    device: str = "cpu"


@dataclass
class ExplainRequest:
    """Everything ``texplain explain`` needs."""

    target: Path
    translator: Path
    out: Path
    classifier: str | None = None
    lm: str | None = None
    samples: int = 1000
    top_p: float = 0.95
    min_words: int = 20
    max_words: int = 30
    top_k: int = 20
    seed: int = 0
    device: str = "cpu"


def train_from_files(request: TrainRequest) -> History:
    """Read captions, extract (or reuse) features, train the translator, save it to ``request.out``."""
    r = request
    train_pairs = _read_pairs(r.captions, r.split, r.limit)
    finetune_pairs = _read_pairs(r.finetune_captions, r.split, r.limit) if r.finetune_captions else []
    dev_pairs = _read_dev_pairs(r.captions, r.dev_split, r.limit)
    classifier = load_classifier(r.classifier, feature_layer=r.feature_layer).to(r.device)
    paths = list(dict.fromkeys(str(p.image) for p in train_pairs + finetune_pairs + dev_pairs))
    store, skipped = extract_features(
        classifier, paths, r.features or r.out / "features", ExtractionConfig(fp16=r.fp16)
    )
    bad = {path for path, _ in skipped}
    train_pairs, finetune_pairs, dev_pairs = ([p for p in ps if str(p.image) not in bad] for ps in (train_pairs, finetune_pairs, dev_pairs))
    if not train_pairs:
        raise TexplainError(f"{r.captions[0]}: none of its images could be read")
    lm = load_lm(r.lm)
    t, d = store.token_shape
    translator = Translator(
        TranslatorConfig(in_tokens=t, in_dim=d, lm_dim=lm.embed_dim, prefix_len=r.prefix_len, hidden=r.hidden, mode=r.mode),
        Provenance(classifier=classifier.feature_spec, feature_layer=classifier.feature_layer, lm=lm.spec),
    )
    phases = [Phase("train", train_pairs, r.epochs, r.lr)]
    if finetune_pairs:
        phases.append(Phase("finetune", finetune_pairs, r.finetune_epochs, r.finetune_lr))
    config = TrainConfig(batch_size=r.batch_size, seed=r.seed, device=r.device)
    return train_translator(translator, lm, store, phases, r.out, config, dev_pairs, resume=r.resume)


def explain_from_files(request: ExplainRequest) -> tuple[list[dict], list[tuple[str, str]]]:
    """Explain ``request.target`` (an image or a folder) with a trained translator."""
    r = request
    translator = load_translator(r.translator, classifier=r.classifier, lm=r.lm)
    provenance = translator.provenance
    classifier = load_classifier(r.classifier or provenance.classifier, feature_layer=provenance.feature_layer).to(r.device)
    lm = load_lm(r.lm or provenance.lm).to(r.device)
    translator.to(r.device)
    if r.target.is_dir():
        paths = [str(p) for p in find_images(r.target)]
    elif r.target.exists():
        paths = [str(r.target)]
    else:
        raise TexplainError(f"{r.target}: no such file or folder")
    config = ExplainConfig(
        sampling=SamplingConfig(num_samples=r.samples, top_p=r.top_p, min_words=r.min_words, max_words=r.max_words, seed=r.seed),
        words=WordConfig(top_k=r.top_k),
    )
    return explain_images(classifier, translator, lm, paths, r.out, config)


def _read_pairs(files: list[Path], split: str | None, limit: int | None) -> list[CaptionPair]:
    """Caption pairs of one split from several files, optionally only the first ``limit`` images."""
    pairs = [p for path in files for p in read_captions(path, split=split)]
    return _limit_images(pairs, limit)


def _read_dev_pairs(files: list[Path], split: str | None, limit: int | None) -> list[CaptionPair]:
    """The dev split of the training files, or nothing (with a note) when they have none."""
    if not split:
        return []
    try:
        return _read_pairs(files, split, limit)
    except TexplainError as exc:
        log.info("no dev loss: %s", exc)
        return []


def _limit_images(pairs: list[CaptionPair], limit: int | None) -> list[CaptionPair]:
    if limit is None:
        return pairs
    keep = set(list(dict.fromkeys(p.image for p in pairs))[:limit])
    return [p for p in pairs if p.image in keep]
