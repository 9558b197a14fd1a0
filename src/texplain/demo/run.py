"""The offline demo: a synthetic world with a planted shortcut, explained end to end.

Steps (each cached in the output folder, so a second run only redraws):

1. generate the world: captioned scenes for the LM and the translator (every
   class on every background of the labelled split, unbiased: the captions
   describe the world the classifier lives in), and a Waterbirds-like split
   whose train half ties each class to a background (``bias``) and whose test
   half is balanced;
2. pretrain the small caption LM on the world's captions;
3. train the classifier (by default a small CNN, resnet10t from a timm
   config, first on the captioned scenes' objects, as ImageNet pretraining
   goes before Waterbirds) on the biased train split; measure accuracy per
   group;
4. extract its features and train the translator on the captioned scenes;
5. explain the balanced test images, a sample of the biased train images and
   the test images' only-background versions with
   :func:`~texplain.analysis.explain_dataset.explain_dataset`, as a user's
   data set is explained;
6. analyse them as ``texplain analyse`` does, pooled by the class the
   classifier predicts ("what it sees when it says bird"), and write the
   same HTML report (train against test, and the only-background test
   beside them), with the demo's findings on top, and ``summary.json``.

A class's shortcut is found when its planted background word is among its
shortcut suspects (:mod:`texplain.analysis.suspects`) on the balanced test
split, the same suspects ``texplain analyse --suspect-split test`` lists:
on the biased train split any classifier's images would say their planted
place, so train shows what shifts, not what the classifier uses.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from texplain.analysis.analyse import DatasetAnalysis, analyse_folders
from texplain.analysis.config import AnalysisConfig, DatasetExplainConfig, PriorConfig
from texplain.analysis.explain_dataset import explain_dataset
from texplain.analysis.results import MANIFEST, ResultsFolder
from texplain.atomic import write_json
from texplain.data.captions import caption_groups, read_captions
from texplain.data.labelled import read_labelled
from texplain.demo.captions import BACKGROUND_WORDS
from texplain.demo.config import DemoConfig
from texplain.demo.splits import make_caption_world, make_shortcut_split, planted_background
from texplain.demo.world_files import write_world
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig
from texplain.models.classifiers import Classifier, load_classifier, replace_head, save_classifier
from texplain.models.config import ExtractionConfig
from texplain.models.explainer import Explainer
from texplain.models.lm import FrozenLM, load_lm
from texplain.models.translator import Translator, load_translator
from texplain.progress import tqdm
from texplain.report.config import ReportConfig
from texplain.report.html_report import write_report
from texplain.statistics import group_accuracy
from texplain.training.caption_lm import pretrain_caption_lm
from texplain.training.classifier_training import label_indices, load_pixels, predict, train_classifier
from texplain.training.config import CaptionLMConfig, ClassifierTrainConfig, Phase, TrainConfig
from texplain.training.translator_training import fit_translator

log = logging.getLogger(__name__)

SETTINGS_FILE = "demo_settings.json"
OWNED = ("world", "lm", "classifier", "features", "translator", "results", "results_only_bg", "report", "summary.json",
         SETTINGS_FILE)
RESULTS = {"split": "results", "only_bg": "results_only_bg"}
"""Results folder of each explained world folder: the labelled split, and its test images with the object hidden."""
SUSPECT_SPLIT = "test"
"""The split whose pools give the suspects and the summary: the balanced one."""
VIT_KWARGS = {"patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}


def run_demo(config: DemoConfig, progress: bool = True) -> dict:
    """Run (or reuse) every step and return the summary that is also written to ``summary.json``."""
    out = _prepare_output(config)
    world = _generate_world(config, out, progress)
    lm = load_lm(str(_pretrain_lm(config, out / "lm", world, progress))).to(config.device)
    classifier, accuracy = _train_classifier(config, out / "classifier", world, progress)
    explainer = Explainer(classifier, _train_translator(config, classifier, lm, out, world, progress), lm).to(config.device)
    for name in ("split", "only_bg"):
        _explain(config, explainer, world[name], out / RESULTS[name], out / "features", progress)
    folder, analysis, hidden = analyse_folders(
        out / RESULTS["split"], AnalysisConfig(by="predicted", suspect_split=SUSPECT_SPLIT), out / RESULTS["only_bg"])
    summary = _summarise(config, accuracy, analysis, hidden)
    write_json(out / "summary.json", summary)
    findings = tuple(headline(summary).splitlines())
    write_report(out / "report", folder, analysis, hidden,
                 ReportConfig(title="texplain demo: what a shortcut-trained classifier sees", findings=findings,
                              seed=config.seed))
    return summary


def headline(summary: dict) -> str:
    """One line per class: where its planted background stands among its shortcut suspects."""
    lines = []
    for name, result in summary["classes"].items():
        planted, rank = result["planted_background"], result["planted_rank"]
        if rank is not None:
            own = result["class_word_rank"]
            lines.append(f"class {name}: '{planted}' is shortcut suspect {rank} of {len(result['suspects'])}; "
                         + (f"the class word ranks {own} among its words" if own else "the class word is not among its top words"))
        else:
            suspects = ", ".join(s["word"] for s in result["suspects"]) or "none"
            lines.append(f"class {name}: no shortcut to '{planted}' found (suspects: {suspects})")
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
    captions = caption_groups(read_captions(world["captions"] / "captions.jsonl"))
    lm_config = CaptionLMConfig(n_layer=2, n_embd=128, n_head=4, vocab_size=1024, epochs=config.lm_epochs, seed=config.seed)
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
    accuracy = group_accuracy(predict(classifier, load_pixels(classifier, test_items)).tolist(), test_labels.tolist(),
                              [i.group for i in test_items])
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


def _train_translator(config: DemoConfig, classifier: Classifier, lm: FrozenLM, out: Path, world: dict[str, Path],
                      progress: bool) -> Translator:
    """The translator from the classifier's features to the LM, trained on the captioned scenes."""
    folder = out / "translator"
    if (folder / "translator.json").is_file():
        return load_translator(folder)
    pairs = read_captions(world["captions"] / "captions.jsonl")
    translator, _ = fit_translator(
        classifier, lm, [Phase("train", pairs, config.translator_epochs, lr=2e-3)], folder,
        settings={"prefix_len": 8, "hidden": 256}, config=TrainConfig(batch_size=128, seed=config.seed, device=config.device),
        features=out / "features", extraction=ExtractionConfig(batch_size=128), progress=progress,
    )
    return translator.eval()


def _explain(config: DemoConfig, explainer: Explainer, world: Path, results: Path, features: Path, progress: bool) -> None:
    """Explain one labelled world folder's test split and sample of train into a results folder, unless complete."""
    if (results / MANIFEST).is_file() and ResultsFolder.open(results).complete:
        return
    explain = ExplainConfig(sampling=config.sampling, word_cloud=False)
    prior = PriorConfig(seed=config.seed) if results.name == RESULTS["split"] else None
    items = read_labelled(world / "labels.jsonl")
    train = [i for i in items if i.split == "train"]
    sample = set(random.Random(config.seed).sample(range(len(train)), min(config.explained_train, len(train))))
    explained = [i for n, i in enumerate(train) if n in sample] + [i for i in items if i.split == "test"]
    explain_dataset(explainer, explained, results, DatasetExplainConfig(explain=explain, prior=prior),
                    features=features, progress=progress)


def _summarise(config: DemoConfig, accuracy: dict, analysis: DatasetAnalysis, hidden: dict | None) -> dict:
    """Per predicted class on the test split: its top words and suspects (the analysis'), the planted word's rank."""
    classes = {}
    for name in config.classes:
        planted = BACKGROUND_WORDS[planted_background(name)]
        report = analysis.classes.get(name)
        words = report.words.get(SUSPECT_SPLIT, []) if report else []
        suspects = [s.word for s in report.suspects] if report else []
        only_bg = hidden.get(name) if hidden else None
        classes[name] = {
            "images": report.images.get(SUSPECT_SPLIT, 0) if report else 0,
            "top_words": [{"word": w.word, "frequency": round(w.frequency, 4)} for w in words],
            "suspects": [s.to_json() for s in report.suspects] if report else [],
            "planted_background": planted,
            "planted_rank": suspects.index(planted) + 1 if planted in suspects else None,
            "class_word_rank": next((i for i, w in enumerate(words, 1) if w.is_class), None),
            "shortcut_found": planted in suspects,
            "only_background": {
                "images": only_bg.images if only_bg else 0,
                "top_words": [{"word": w, "frequency": round(f, 4)} for w, f in only_bg.top_words] if only_bg else [],
            },
        }
    return {"settings": {k: v for k, v in asdict(config).items() if k not in ("out", "fresh")} | {"out": str(config.out)},
            "accuracy": accuracy, "classes": classes}
