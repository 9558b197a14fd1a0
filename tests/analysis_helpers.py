"""Shared builders for the analysis, query and report tests: hand-made results folders and demo runs.

A hand-made results folder has rows whose counts are chosen so that the
expected statistics can be worked out on paper; the demo runs explain the
``tiny_demo`` world once per test session (cached here, since several test
files use them).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from PIL import Image

from texplain.analysis.results import PRIOR, ResultsFolder
from texplain.atomic import write_json
from texplain.text.config import ClassOverride, ClassWordConfig, WordConfig
from texplain.text.words import WordCounter, rank_words

CLASSES = ["bird", "car", "dog"]

# image, label, split, group, predicted, word counts (of 100 sentences), class mentions
ROWS = [
    ("b1", "bird", "train", "bird|water", "bird", {"water": 80, "bird": 50, "duck": 30, "man": 50, "standing": 50}, {"bird": 70}),
    ("b2", "bird", "train", "bird|water", "bird", {"water": 90, "bird": 60, "man": 50, "standing": 50}, {"bird": 60}),
    ("b3", "bird", "test", "bird|grass", "car", {"water": 20, "grass": 60, "bird": 70, "man": 50, "standing": 50}, {"bird": 70}),
    ("c1", "car", "train", "car|road", "car", {"road": 90, "car": 80, "man": 50}, {"car": 80}),
    ("c2", "car", "test", "car|water", "car", {"road": 30, "water": 10, "car": 60, "man": 50}, {"car": 60}),
    ("d1", "dog", "train", "dog|grass", "dog", {"grass": 50, "dog": 60, "man": 50}, {"dog": 60}),
]
N_SENTENCES = 100
PRIOR_COUNTS = {"man": 30, "standing": 30, "water": 2, "road": 2, "grass": 1}
PRIOR_SENTENCES = 40


def settings(words: WordConfig | None = None) -> dict:
    """Results settings for hand-made rows: no WordNet (fast), 'duck' added to bird's words."""
    class_words = ClassWordConfig(wordnet=False, overrides={"bird": ClassOverride(add=("duck",))})
    return {"class_names": CLASSES, "words": asdict(words or WordConfig()), "class_words": class_words.to_json(),
            "classifier": "hand-made", "lm": "hand-made", "prior": {"kinds": ["blank"]},
            "sampling": {"num_samples": N_SENTENCES, "top_p": 0.95}}


def row(image: str, label: str, split: str | None, group: str | None, predicted: str, counts: dict, mentions: dict,
        n: int = N_SENTENCES, others: tuple[str, ...] = ()) -> dict:
    """One results row as explain_dataset writes it."""
    ranked = rank_words(counts)
    top5 = [{"index": CLASSES.index(predicted) if predicted in CLASSES else 0, "name": predicted, "prob": 0.7}]
    top5 += [{"index": i, "name": name, "prob": 0.1} for i, name in enumerate(others)]
    return {"image": image, "label": label, "split": split, "group": group, "predicted": predicted, "confidence": 0.7,
            "correct": predicted == label, "top5": top5, "n_sentences": n, "top_word": ranked[0][0] if ranked else None,
            "words": [{"word": w, "count": c} for w, c in ranked],
            "class_mentions": [{"name": k, "count": v} for k, v in sorted(mentions.items())],
            "sentences": [f"a {label} near the {ranked[0][0]}"] if ranked else []}


def make_results(folder: Path, rows=ROWS, prior: bool = True, image_dir: Path | None = None, chunk: int = 2) -> ResultsFolder:
    """A results folder of the hand-made rows (images drawn into ``image_dir`` when given), with a prior."""
    results = ResultsFolder.open(folder, settings(), create=True)
    built = []
    for image, *rest in rows:
        path = image
        if image_dir is not None:
            image_dir.mkdir(parents=True, exist_ok=True)
            path = str(image_dir / f"{image}.png")
            Image.new("RGB", (40, 30), (20 * len(built), 120, 200)).save(path)
        built.append(row(path, *rest))
    for start in range(0, len(built), chunk):
        results.commit(built[start : start + chunk], [])
    if prior:
        counter = WordCounter.from_dict({"config": asdict(WordConfig()), "n_sentences": PRIOR_SENTENCES,
                                         "document_counts": PRIOR_COUNTS})
        write_json(folder / PRIOR, {"kinds": ["blank"], "counts": counter.to_dict(), "mentions": {}})
    results.finish()
    return results


@lru_cache(maxsize=1)
def demo_runs(tiny_demo: Path, base: Path) -> dict[str, Path]:
    """Explain the tiny demo world (both splits) and its only-background twin through the CLI, once."""
    from texplain.cli import main

    out = {"results": base / "results", "hidden": base / "hidden", "report": base / "report"}
    common = ["--translator", str(tiny_demo / "translator"), "--samples", "3", "--min-words", "3", "--max-words", "10",
              "--chunk-size", "40"]
    assert main(["explain-dataset", str(tiny_demo / "world/split/labels.jsonl"), "--out", str(out["results"]),
                 "--prior", "blank,mean,shuffled", *common]) == 0
    assert main(["explain-dataset", str(tiny_demo / "world/only_bg/labels.jsonl"), "--out", str(out["hidden"]),
                 "--prior", "none", *common]) == 0
    assert main(["analyse", str(out["results"]), "--out", str(out["report"]), "--only-background", str(out["hidden"]),
                 "--min-z", "0", "--min-lift", "0", "--images-per-class", "3"]) == 0
    return out
