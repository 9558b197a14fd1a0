"""Mitigation's first step on BAR: which share of BAR train is selected as leaning on a shortcut.

An image is selected by the rule ``--select`` names (:mod:`texplain.mitigation.selection`:
``not-class``, the paper's, when its first dominant word over the LM prior is
not its class; ``suspects`` when one of its class's shortcut suspects is
among its top words; ``auto`` chooses), with the settings ``texplain
mitigate`` uses. The paper selects 26-29% of its training sets.
Reads a finished ``benchmarks/bar_analysis.py`` run (its classifier, class
words and feature store); writes ``benchmarks/results/bar/selection.json``.

    python benchmarks/bar_selection.py --bar runs/bar --translator runs/flickr8k/translator
    python benchmarks/bar_selection.py --bar runs/bar --translator runs/flickr8k/translator \
        --select not-class --out benchmarks/results/bar/selection_not_class.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from texplain.atomic import write_json
from texplain.data.labelled import read_labelled
from texplain.mitigation.config import SelectionConfig
from texplain.mitigation.selection import choose, explain_training
from texplain.models.explainer import load_explainer
from texplain.models.features import FeatureStore
from texplain.text.class_vocabulary import load_overrides
from texplain.text.config import ClassWordConfig

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bar", type=Path, required=True, help="a benchmarks/bar_analysis.py --out folder")
    parser.add_argument("--translator", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--class-words", type=Path,
                        help="JSON of extra words per class (default: the run's class_words.json)")
    parser.add_argument("--select", default="auto", help="auto, suspects or not-class")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bar" / "selection.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    explainer = load_explainer(args.translator, str(args.bar / "classifier"))
    train = [i for i in read_labelled(args.data / "bar" / "metadata.json") if i.split == "train"]
    class_words = args.class_words or args.bar / "class_words.json"
    config = SelectionConfig(class_words=ClassWordConfig(overrides=load_overrides(class_words)), rule=args.select)
    explained = explain_training(explainer.classifier, explainer.translator, explainer.lm,
                                 FeatureStore(args.bar / "results" / "features"), [str(i.path) for i in train],
                                 [i.label for i in train], config, progress=True)
    selection = choose(*explained, config)
    result = {"translator": str(args.translator), "class_words": str(class_words),
              "sentences_per_image": config.sampling.num_samples, "min_frequency": config.min_frequency, "min_lift": config.min_lift, **selection.to_json(),
              "seconds": round(time.perf_counter() - started, 1)}
    write_json(args.out, result)
    print(f"rule {result['rule']} ({result['reason']}): selected={result['fraction']} of {result['images']} images; "
          f"top words: {result['top_words_selected']}")


if __name__ == "__main__":
    main()
