"""Which stopping rule for ``--samples auto``: sentences used against top-10 agreement, on real photos.

Each image's sentences are drawn twice with N = 1000 (seeds 0 and 1, the
shared-prefix sampler). Every candidate rule is then replayed on seed 0's
sentences in rounds of 25, as adaptive sampling draws them: the rule stops
the image at some n, and its top 10 words after n sentences are compared
with the top 10 of seed 1's independent 1000 sentences (the reference a
user would otherwise have waited for). Seed 0's own 1000 sentences give the
ceiling: two independent 1000-sentence draws do not agree on all ten words
either. Fixed budgets (the first 100, 200, ... sentences) are rows too.

Replaying is cheap once the sentences are drawn, so every rule sees the
same sentences; the drawn words are cached in ``--cache`` (JSON) and a
rerun with the same images and translator only replays.

    python benchmarks/stop_rules.py --translator runs/flickr8k/translator   # 50 dev photos, about 6 min
    python benchmarks/stop_rules.py --quick                                 # the demo's model

Writes ``benchmarks/results/stop_rules.json``; the last line is
``rule=<chosen> median_sentences=<n> top10_overlap=<x> ceiling=<y>``, the
chosen rule being the one with the fewest median sentences (then mean)
whose mean overlap with the independent reference is at least ``--bar``
(9 of 10 words, the bar a user's explanation should meet).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import torch

from texplain.atomic import write_json
from texplain.generate.config import ExplainConfig, SamplingConfig, StopRule
from texplain.generate.explain import explain_stream
from texplain.generate.stopping import settled
from texplain.models.config import ExtractionConfig
from texplain.models.explainer import load_explainer
from texplain.models.features import extract_features
from texplain.text.config import WordConfig
from texplain.text.words import rank_words, sentence_words

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_throughput import _images  # noqa: E402  (the same photos as the throughput benchmark)

HERE = Path(__file__).resolve().parent
ROUND = 25
RULES = {
    f"wilson c={c} tol={t}": StopRule(k=10, confidence=c, tolerance=t, min_sentences=50)
    for c in (0.95, 0.8, 0.5) for t in (1, 2, 3, 4)
}
"""Wilson-interval rules (:mod:`texplain.generate.stopping`): confidence and the top-10 words allowed to overlap."""
BUDGETS = (100, 200, 300, 500, 1000)


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    words = WordConfig(top_k=10)
    drawn = _drawn(args, words)  # {seed: [per image: [per sentence: sorted words]]}
    mine, reference = drawn["0"], drawn["1"]
    own_tops, reference_tops = [_top(s) for s in mine], [_top(s) for s in reference]  # each image's, at the cap
    rows = {}
    for n in BUDGETS:
        rows[f"fixed {n}"] = _score([(n, _top(s[:n])) for s in mine], own_tops, reference_tops)
    for name, rule in RULES.items():
        rows[name] = _score([_replay(s, rule, args.cap) for s in mine], own_tops, reference_tops)
    ceiling = rows[f"fixed {args.cap}"]["top10_overlap"]
    good = [name for name, row in rows.items() if row["top10_overlap"] >= args.bar and not name.startswith("fixed")]
    chosen = min(good, key=lambda name: (rows[name]["median_sentences"], rows[name]["mean_sentences"]), default=None)
    write_json(args.out, {"images": len(mine), "translator": str(args.translator or args.demo / "translator"),
                          "cap": args.cap, "round": ROUND, "ceiling": ceiling, "bar": args.bar, "chosen": chosen,
                          "rules": rows})
    for name, row in rows.items():
        print(f"{name:24s} median {row['median_sentences']:5d}  mean {row['mean_sentences']:6.1f}  "
              f"top-10 overlap {row['top10_overlap']:.2f} (own cap {row['top10_overlap_own_cap']:.2f})")
    best = rows[chosen] if chosen else {"median_sentences": None, "top10_overlap": None}
    print(f"rule={chosen!r} median_sentences={best['median_sentences']} top10_overlap={best['top10_overlap']} "
          f"ceiling={ceiling}")


def _drawn(args: argparse.Namespace, words: WordConfig) -> dict[str, list[list[list[str]]]]:
    """Per seed, per image, per sentence: its content words; from the cache when it matches the run."""
    key = {"translator": str(args.translator or args.demo / "translator"), "images": args.images, "cap": args.cap}
    if args.cache.is_file():
        cached = json.loads(args.cache.read_text())
        if cached["key"] == key:
            return cached["words"]
    explainer = load_explainer(args.translator or args.demo / "translator")
    paths = _images(args)
    store, _ = extract_features(explainer.classifier, paths, args.features, ExtractionConfig(fp16=True), progress=False)
    features = store.load_all(paths).float()
    result = {}
    for seed in (0, 1):
        config = ExplainConfig(SamplingConfig(num_samples=args.cap, seed=seed), words)
        result[str(seed)] = [[sorted(set(sentence_words(s, words))) for s in e.sentences]
                             for e in explain_stream(explainer.translator, explainer.lm, features, config, progress=True)]
    write_json(args.cache, {"key": key, "words": result})
    return result


def _top(sentences: list[list[str]], k: int = 10) -> list[str]:
    """The k words in most sentences."""
    return _ranked(Counter(w for s in sentences for w in s), k)


def _ranked(counts: Counter[str], k: int = 10) -> list[str]:
    """The k words in most sentences, in the order every word list follows (:func:`~texplain.text.words.rank_words`)."""
    return [w for w, _ in rank_words(counts)[:k]]


def _replay(sentences: list[list[str]], rule: StopRule, cap: int) -> tuple[int, list[str]]:
    """Where ``rule`` stops an image drawing ``sentences`` in rounds, and its top 10 there."""
    counts: Counter[str] = Counter()
    for start in range(0, cap, ROUND):
        for s in sentences[start:start + ROUND]:
            counts.update(s)
        n = min(start + ROUND, cap)
        if settled(counts, n, rule):
            return n, _ranked(counts)
    return cap, _ranked(counts)


def _score(stops: list[tuple[int, list[str]]], own_tops: list[list[str]], reference_tops: list[list[str]]) -> dict:
    """Median and mean sentences; the mean top-10 overlap with each image's independent reference, and with the
    top 10 of all of its own sentences (the words the same draw would have reached at the cap)."""
    used = [n for n, _ in stops]
    overlaps = [len(set(top) & set(ref)) for (_, top), ref in zip(stops, reference_tops)]
    nested = [len(set(top) & set(own)) for (_, top), own in zip(stops, own_tops)]
    return {"median_sentences": int(statistics.median_low(used)), "mean_sentences": round(statistics.fmean(used), 1),
            "top10_overlap": round(statistics.fmean(overlaps), 2), "min_overlap": min(overlaps),
            "top10_overlap_own_cap": round(statistics.fmean(nested), 2)}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translator", type=Path, help="a translator trained on Flickr8k (its dev photos are explained)")
    parser.add_argument("--demo", type=Path, default=Path("texplain-demo"), help="a demo run, used without --translator")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--cap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", type=Path, default=Path("runs/throughput-features"))
    parser.add_argument("--cache", type=Path, default=Path("runs/stop-rules-words.json"))
    parser.add_argument("--bar", type=float, default=9.0, help="least mean top-10 overlap of the chosen rule")
    parser.add_argument("--quick", action="store_true", help="10 images, N = 300")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "stop_rules.json")
    args = parser.parse_args()
    if args.quick:
        args.images, args.cap = 10, 300
        args.out = args.out.with_name("stop_rules_quick.json")
        args.cache = args.cache.with_name("stop-rules-words-quick.json")
    return args


if __name__ == "__main__":
    main()
