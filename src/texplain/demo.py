"""The offline demo: a synthetic world with a planted shortcut, explained end to end.

Steps (each cached in the output folder, so a second run only redraws):

1. generate the world: captioned scenes for the LM and the translator (every
   class on every background of the labelled split, unbiased: the captions
   describe the world the classifier lives in), and a Waterbirds-like split
   whose train half ties each class to a background (``bias``) and whose test
   half is balanced;
2. pretrain the small caption LM on the world's captions;
3. train the classifier (by default a small ViT from a timm config, so the
   (P+1) x D token path is exercised) on the biased train split, perhaps
   after pretraining it on the captioned scenes; measure accuracy per group;
4. extract its features;
5. train the translator on the captioned scenes;
6. explain the balanced test images and their only-background versions,
   pooled by the class the classifier predicts: "what it sees when it says
   bird";
7. write the report folder and ``summary.json``.

A class's shortcut is found when its planted background word is among its
top-3 non-class words that are over-represented in it (see
:mod:`texplain.analysis`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from texplain.analysis import class_frequencies, pool_counters, rank_of, suspects
from texplain.atomic import write_json
from texplain.classifier_training import (
    ClassifierTrainConfig, group_accuracy, label_indices, load_pixels, predict, train_classifier,
)
from texplain.classifiers import Classifier, load_classifier, replace_head, save_classifier
from texplain.data.captions import read_captions
from texplain.data.labelled import read_labelled
from texplain.data.world import (
    DEFAULT_SHORTCUT_CLASSES, make_caption_world, make_shortcut_split, planted_background, write_world,
)
from texplain.data.world_captions import BACKGROUND_WORDS
from texplain.errors import TexplainError
from texplain.explain import ExplainConfig, class_words, explain_features
from texplain.features import ExtractionConfig, FeatureStore, extract_features
from texplain.lm import load_lm
from texplain.report.demo_report import write_demo_report
from texplain.sampling import SamplingConfig
from texplain.smalllm import SmallLMConfig, pretrain_caption_lm
from texplain.train import Phase, TrainConfig, train_translator
from texplain.translator import Provenance, Translator, TranslatorConfig, load_translator
from texplain.words import WordConfig, WordCounter

log = logging.getLogger(__name__)

SETTINGS_FILE = "demo_settings.json"
OWNED = ("world", "lm", "classifier", "features", "translator", "explanations.json", "report", "summary.json", SETTINGS_FILE)
VIT_KWARGS = {"patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}
MIN_TRAIN_PER_CLASS = 20


@dataclass
class DemoConfig:
    """Sizes and seeds of the demo; the defaults finish in about two minutes on two CPU cores.

    classifier: ``vit`` (the default: a small ViT, so the (P+1) x D token
    path is the one exercised) or any timm architecture name, built untrained
    at ``image_size`` (``resnet10t``: a small CNN, which learns the drawn
    objects where the small ViT learns only backgrounds).
    pretrain_epochs: when above 0, the classifier first learns the objects of
    the captioned scenes (every class on every background: the demo's stand-in
    for ImageNet pretraining), then its head is replaced and it is trained on
    the biased split, as a practitioner fine-tunes a pretrained model.
    caption_images: captioned scenes for the LM and the translator.
    train_images, test_images: the labelled split (train biased, test balanced).
    bias: fraction of each class's train images on its planted background;
    ``balanced=True`` makes train balanced (the control). samples: sentences
    per test image. The epochs are for the classifier, LM and translator.
    """

    out: Path = Path("texplain-demo")
    seed: int = 0
    image_size: int = 64
    classes: tuple[str, ...] = DEFAULT_SHORTCUT_CLASSES
    classifier: str = "vit"
    pretrain_epochs: int = 0
    caption_images: int = 1200
    train_images: int = 600
    test_images: int = 270
    bias: float = 0.95
    balanced: bool = False
    samples: int = 20
    classifier_epochs: int = 20
    lm_epochs: int = 2
    translator_epochs: int = 4
    fresh: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.classes = tuple(self.classes)
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
        if self.pretrain_epochs < 0:
            raise TexplainError("demo: pretrain_epochs must be 0 (no pretraining) or more")
        if self.samples < 1 or min(self.classifier_epochs, self.lm_epochs, self.translator_epochs) < 1:
            raise TexplainError("demo: samples and every epochs setting must be at least 1")

    def fingerprint(self) -> str:
        """A hash of every setting that changes the results (not out, fresh, device)."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("out", "fresh", "device")}
        return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_timm_model(name: str) -> bool:
    """Whether timm can build ``name`` (checked before the long steps, not after them)."""
    import timm

    return timm.is_model(name)


def run_demo(config: DemoConfig, progress: bool = True) -> dict:
    """Run (or reuse) every step and return the summary that is also written to ``summary.json``."""
    out = _prepare_output(config)
    world = _generate_world(config, out, progress)
    lm_folder = _pretrain_lm(config, out / "lm", world, progress)
    classifier, accuracy = _train_classifier(config, out / "classifier", world, progress)
    store = _extract(config, classifier, out / "features", world, progress)
    translator = _train_translator(config, classifier, lm_folder, store, out / "translator", world, progress)
    explanations = _explain(config, classifier, translator, lm_folder, store, world, out / "explanations.json", progress)
    summary = _summarise(config, accuracy, explanations)
    write_json(out / "summary.json", summary)
    write_demo_report(out / "report", summary, explanations, headline(summary).splitlines())
    return summary


def headline(summary: dict) -> str:
    """One line per class: the planted word's rank against the class word's."""
    lines = []
    for name, result in summary["classes"].items():
        planted, rank, own = result["planted_background"], result["planted_rank"], result["class_word_rank"]
        if rank is not None and (own is None or rank < own):
            lines.append(f"class {name}: '{planted}' outranks '{name}' (rank {rank} vs {own or 'absent'})")
        elif result["shortcut_found"]:
            lines.append(f"class {name}: '{planted}' is among its top non-class words (rank {rank})")
        else:
            lines.append(f"class {name}: no shortcut to '{planted}' found (rank {rank or 'absent'})")
    return "\n".join(lines)


def _prepare_output(config: DemoConfig) -> Path:
    """Check the folder is writable; wipe the demo's own artifacts on --fresh or changed settings."""
    out = config.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TexplainError(f"{out}: cannot write the demo there ({exc.strerror or exc})") from exc
    settings = out / SETTINGS_FILE
    previous = json.loads(settings.read_text()).get("fingerprint") if settings.is_file() else None
    if config.fresh or previous != config.fingerprint():
        for name in OWNED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    write_json(settings, {"fingerprint": config.fingerprint(), "settings": asdict(config) | {"out": str(out)}})
    return out


def _generate_world(config: DemoConfig, out: Path, progress: bool) -> dict[str, Path]:
    """Write the captioned scenes, the labelled split and its only-background twin."""
    folders = {name: out / "world" / name for name in ("captions", "split", "only_bg")}
    if all((f / "labels.jsonl").is_file() for f in folders.values()):
        return folders
    steps = tqdm(total=3, desc="world", unit="set", disable=not progress)
    backgrounds = tuple(planted_background(name) for name in config.classes)
    scenes = make_caption_world(config.caption_images, seed=config.seed, size=config.image_size, backgrounds=backgrounds)
    write_world(scenes, folders["captions"])
    steps.update()
    split = make_shortcut_split(
        config.classes, n_train=config.train_images, n_test=config.test_images, bias=config.bias,
        seed=config.seed + 1, size=config.image_size, balanced=config.balanced,
    )
    write_world(split, folders["split"])
    steps.update()
    write_world([s for s in split if s.split == "test"], folders["only_bg"], background_only=True)
    steps.update()
    steps.close()
    return folders


def _pretrain_lm(config: DemoConfig, folder: Path, world: dict[str, Path], progress: bool) -> Path:
    if (folder / "config.json").is_file():
        return folder
    captions = [p.caption for p in read_captions(world["captions"] / "captions.jsonl")]
    lm_config = SmallLMConfig(n_layer=2, n_embd=128, n_head=4, vocab_size=1024, epochs=config.lm_epochs, seed=config.seed)
    return pretrain_caption_lm(captions, folder, lm_config, progress=progress)


def _train_classifier(config: DemoConfig, folder: Path, world: dict[str, Path], progress: bool) -> tuple[Classifier, dict]:
    """The classifier trained on the biased train split, with its per-group test accuracy."""
    accuracy_file = folder / "accuracy.json"
    if accuracy_file.is_file():
        return load_classifier(str(folder)), json.loads(accuracy_file.read_text())
    items = read_labelled(world["split"] / "labels.jsonl")
    names = list(config.classes)
    torch.manual_seed(config.seed)
    if config.pretrain_epochs:
        classifier = _pretrained_classifier(config, world, len(names), progress)
    else:
        classifier = untrained_classifier(config.classifier, len(names), config.image_size)
    classifier.class_names = names
    train_items = [i for i in items if i.split == "train"]
    test_items = [i for i in items if i.split == "test"]
    train_classifier(
        classifier, load_pixels(classifier, train_items), label_indices(train_items, names),
        ClassifierTrainConfig(epochs=config.classifier_epochs, seed=config.seed, device=config.device), progress,
    )
    test_labels = label_indices(test_items, names)
    accuracy = group_accuracy(predict(classifier, load_pixels(classifier, test_items)), test_labels, [i.group for i in test_items])
    save_classifier(classifier, folder)
    saved = load_classifier(str(folder))  # before accuracy.json marks the step done: a folder that fails here is redone
    write_json(accuracy_file, accuracy)
    return saved, accuracy


def _pretrained_classifier(config: DemoConfig, world: dict[str, Path], num_classes: int, progress: bool) -> Classifier:
    """The chosen architecture trained on the captioned scenes' objects, with a fresh head of ``num_classes``."""
    scenes = read_labelled(world["captions"] / "labels.jsonl")
    names = sorted({i.label for i in scenes})
    classifier = untrained_classifier(config.classifier, len(names), config.image_size)
    train_classifier(
        classifier, load_pixels(classifier, scenes), label_indices(scenes, names),
        ClassifierTrainConfig(epochs=config.pretrain_epochs, seed=config.seed, device=config.device), progress,
    )
    replace_head(classifier.module, num_classes)
    classifier.build["num_classes"] = num_classes  # so that save_classifier rebuilds it with the new head
    return classifier


def untrained_classifier(name: str, num_classes: int, image_size: int) -> Classifier:
    """``vit`` (the demo's small ViT) or a timm architecture, randomly initialised for ``image_size`` px."""
    if name == "vit":
        return load_classifier("timm:vit_tiny_patch16_224", pretrained=False, num_classes=num_classes,
                               model_kwargs={"img_size": image_size, **VIT_KWARGS})
    overlay = {"input_size": [3, image_size, image_size], "crop_pct": 1.0}
    return load_classifier(f"timm:{name}", pretrained=False, num_classes=num_classes,
                           model_kwargs={"pretrained_cfg_overlay": overlay})


def _extract(config: DemoConfig, classifier: Classifier, folder: Path, world: dict[str, Path], progress: bool) -> FeatureStore:
    paths = [str(p.image) for p in read_captions(world["captions"] / "captions.jsonl")]
    paths += [str(i.path) for name in ("split", "only_bg") for i in read_labelled(world[name] / "labels.jsonl", split="test")]
    store, skipped = extract_features(classifier, list(dict.fromkeys(paths)), folder, ExtractionConfig(batch_size=128), progress=progress)
    if skipped:
        raise TexplainError(f"{skipped[0][0]}: a generated image could not be read ({skipped[0][1]})")
    return store


def _train_translator(config, classifier, lm_folder, store, folder, world, progress) -> Translator:
    if (folder / "translator.json").is_file():
        return load_translator(folder)
    lm = load_lm(str(lm_folder))
    pairs = read_captions(world["captions"] / "captions.jsonl")
    t, d = store.token_shape
    torch.manual_seed(config.seed)
    translator = Translator(
        TranslatorConfig(in_tokens=t, in_dim=d, lm_dim=lm.embed_dim, prefix_len=8, hidden=256),
        Provenance(classifier=classifier.feature_spec, feature_layer=classifier.feature_layer, lm=lm.spec),
    )
    train_translator(
        translator, lm, store, [Phase("train", pairs, config.translator_epochs, lr=2e-3)], folder,
        TrainConfig(batch_size=128, seed=config.seed, device=config.device), progress=progress,
    )
    return load_translator(folder)


def _explain(config, classifier, translator, lm_folder, store, world, cache: Path, progress: bool) -> dict:
    """Per test image (and its only-background twin): prediction and word counts, cached as JSON."""
    if cache.is_file():
        return json.loads(cache.read_text())
    lm = load_lm(str(lm_folder)).to(config.device)
    translator.to(config.device)
    explain_config = ExplainConfig(
        sampling=SamplingConfig(num_samples=config.samples, min_words=4, max_words=20, batch_size=config.samples, seed=config.seed),
        words=WordConfig(top_k=15),
    )
    result: dict[str, list[dict]] = {}
    for name in ("split", "only_bg"):
        items = read_labelled(world[name] / "labels.jsonl", split="test")
        rows = []
        for item in tqdm(items, desc=f"explain {name}", unit="img", disable=not progress):
            explanation = explain_features(translator, lm, store.features([str(item.path)])[0], explain_config)
            top = store.row(str(item.path))["top5"][0]
            rows.append({"path": str(item.path), "label": item.label, "group": item.group, "predicted": top["name"],
                         "counts": explanation.counter.to_dict(), "sentences": explanation.sentences[:3]})
        result[name] = rows
    write_json(cache, result)
    return result


def _summarise(config: DemoConfig, accuracy: dict, explanations: dict) -> dict:
    """Per predicted class: pooled top words, suspects, the planted word's rank, shortcut_found."""
    word_config = WordConfig(top_k=15)
    by_class = _pool_by_prediction(explanations["split"], config.classes)
    only_bg = _pool_by_prediction(explanations["only_bg"], config.classes)
    frequencies = class_frequencies(by_class)
    classes = {}
    for name in config.classes:
        planted = BACKGROUND_WORDS[planted_background(name)]
        own = class_words(name, word_config)
        found = suspects(frequencies, name, own, k=3)
        top = list(frequencies[name].items())[:15]
        classes[name] = {
            "images": sum(1 for r in explanations["split"] if r["predicted"] == name),
            "top_words": [{"word": w, "frequency": round(f, 4)} for w, f in top],
            "suspects": [s.to_json() for s in found],
            "planted_background": planted,
            "planted_rank": rank_of(frequencies[name], planted),
            "class_word_rank": rank_of(frequencies[name], own[0]) if own else None,
            "shortcut_found": planted in [s.word for s in found],
            "only_background": {
                "images": sum(1 for r in explanations["only_bg"] if r["predicted"] == name),
                "top_words": [{"word": w, "frequency": round(f, 4)} for w, f in only_bg[name].top(10)],
            },
        }
    return {"settings": {k: v for k, v in asdict(config).items() if k not in ("out", "fresh")} | {"out": str(config.out)},
            "accuracy": accuracy, "classes": classes}


def _pool_by_prediction(rows: Sequence[dict], classes: Sequence[str]) -> dict[str, WordCounter]:
    grouped: dict[str, list[WordCounter]] = defaultdict(list)
    for row in rows:
        grouped[row["predicted"]].append(WordCounter.from_dict(row["counts"]))
    return {name: pool_counters(grouped.get(name, []), WordConfig(top_k=15)) for name in classes}

