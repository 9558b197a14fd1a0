"""What the user waits for: images explained per second, four ways, on the same images in one run.

1. ``generate``: ``transformers``' ``generate(num_return_sequences=N)`` after
   each image's prefix (N = the cap, 1000 by default), as a user would call it;
2. ``fixed``: the shared-prefix sampler, N sentences per image, one image at a time;
3. ``adaptive``: sentences drawn in rounds until the image's top 10 words
   are settled (at most N), one image at a time;
4. ``adaptive_batched``: the same, with the rounds of several images decoded
   in one batch (``explain_stream``); each image gets exactly the sentences of 3.

For each: images/s, mean sentences per image, and the mean overlap of the
top 10 words with the ``fixed`` N-sentence reference. ``generate`` is timed
on the first ``--generate-images`` images only (it is the slow baseline; its
images/s is a rate and does not need all of them). A profile of the
adaptive, batched run says where its time goes. The images are Flickr8k dev
photos explained with a translator trained on Flickr8k (``--translator``),
or, without one, the test images of a demo run (``--demo``, made by ``make
demo``). Writes ``benchmarks/results/explain_throughput.json``; the last line
is ``time_to_explanation_speedup=<adaptive_batched over generate, images/s>
top10_overlap=<adaptive_batched's mean overlap, of 10>``.

    python benchmarks/explain_throughput.py --translator runs/flickr8k/translator
    python benchmarks/explain_throughput.py --quick            # the demo's model, under a minute
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import cProfile
import pstats
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from texplain.atomic import write_json
from texplain.data.captions import read_captions
from texplain.data.labelled import read_labelled
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.explain import explain_features, explain_stream
from texplain.models.config import ExtractionConfig
from texplain.models.explainer import load_explainer
from texplain.models.features import extract_features
from texplain.text.config import WordConfig
from texplain.text.words import WordCounter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling import time_generate  # noqa: E402  (the generate call of benchmarks/sampling.py)

HERE = Path(__file__).resolve().parent
FLICKR = HERE.parents[1] / "shared" / "data" / "flickr8k" / "captions.tsv"


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    explainer = load_explainer(args.translator or args.demo / "translator")
    paths = _images(args)
    store, _ = extract_features(explainer.classifier, paths, args.features, ExtractionConfig(fp16=True), progress=False)
    features = store.load_all(paths).float()  # (n, T, D)
    lm, translator = explainer.lm, explainer.translator
    fixed = SamplingConfig(num_samples=args.cap, seed=args.seed)
    adaptive = replace(fixed, adaptive=True)
    words = WordConfig(top_k=10)
    explain_features(translator, lm, features[0], ExplainConfig(replace(fixed, num_samples=8), words))  # warm-up

    runs = {}
    runs["fixed"], reference = _alone(translator, lm, features, ExplainConfig(fixed, words))
    runs["adaptive"], tops = _alone(translator, lm, features, ExplainConfig(adaptive, words))
    runs["adaptive"]["top10_overlap"] = _overlap(tops, reference)
    runs["adaptive_batched"], tops_batched = _batched(translator, lm, features, ExplainConfig(adaptive, words))
    runs["adaptive_batched"]["top10_overlap"] = _overlap(tops_batched, reference)
    runs["adaptive_batched"]["same_words_as_adaptive"] = tops_batched == tops
    runs["generate"], generated = _generate(translator, lm, features[: args.generate_images], fixed, words)
    runs["generate"]["top10_overlap"] = _overlap(generated, reference[: args.generate_images])
    profile = _profile(translator, lm, features[: args.profile_images], ExplainConfig(adaptive, words))

    speedup = runs["adaptive_batched"]["images_per_s"] / runs["generate"]["images_per_s"]
    result = {
        "images": len(paths), "source": "flickr8k dev" if args.translator else f"demo {args.demo}",
        "translator": str(args.translator or args.demo / "translator"), "lm": lm.spec, "cap": args.cap,
        "threads": torch.get_num_threads(), "stop_rule": adaptive.stop.__dict__, "round_size": adaptive.round_size,
        "batch_size": adaptive.batch_size, "runs": runs, "profile_adaptive_batched": profile,
        "time_to_explanation_speedup": round(speedup, 2),
        "batching_speedup": round(runs["adaptive_batched"]["images_per_s"] / runs["adaptive"]["images_per_s"], 2),
        "adaptive_speedup_over_fixed": round(runs["adaptive"]["images_per_s"] / runs["fixed"]["images_per_s"], 2),
    }
    write_json(args.out, result)
    for name, row in runs.items():
        print(f"{name:17s} {row['images_per_s']:8.3f} images/s  {row['mean_sentences']:7.1f} sentences/image  "
              f"median {row['median_sentences']:6.1f}  top-10 overlap {row.get('top10_overlap', 10.0):.2f}")
    print(f"LM forward share of the adaptive batched run: {profile['lm_forward_share']:.0%}; results: {args.out}")
    print(f"time_to_explanation_speedup={speedup:.2f} top10_overlap={runs['adaptive_batched']['top10_overlap']:.2f}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translator", type=Path, help="a translator trained on Flickr8k (its dev photos are explained)")
    parser.add_argument("--demo", type=Path, default=Path("texplain-demo"), help="a demo run, used without --translator")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--cap", type=int, default=1000, help="N: sentences per image, the most when adaptive")
    parser.add_argument("--generate-images", type=int, default=10)
    parser.add_argument("--profile-images", type=int, default=10)
    parser.add_argument("--features", type=Path, help="feature store folder (default: runs/throughput-features)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10 images, N = 300, generate on 3: under a minute")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "explain_throughput.json")
    args = parser.parse_args()
    if args.quick:
        args.images, args.cap, args.generate_images, args.profile_images = 10, 300, 3, 3
        args.out = args.out.with_name("explain_throughput_quick.json")
    args.features = args.features or Path("runs/throughput-features")
    return args


def _images(args) -> list[str]:
    """Flickr8k dev photos (with a Flickr8k translator), else the demo's balanced test images."""
    if args.translator:
        return list(dict.fromkeys(str(p.image) for p in read_captions(FLICKR, split="dev")))[: args.images]
    return [str(i.path) for i in read_labelled(args.demo / "world/split/labels.jsonl", split="test")][: args.images]


def _top10(counter: WordCounter) -> list[str]:
    return [w for w, _ in counter.top(10)]


def _row(seconds: float, sentences: list[int]) -> dict:
    ordered = sorted(sentences)
    return {"seconds": round(seconds, 2), "images_per_s": round(len(sentences) / seconds, 4),
            "mean_sentences": round(sum(sentences) / len(sentences), 1), "median_sentences": ordered[len(ordered) // 2]}


def _alone(translator, lm, features, config) -> tuple[dict, list[list[str]]]:
    """Each image explained by itself, one after the other."""
    started, tops, counts = time.perf_counter(), [], []
    for image in features:
        explanation = explain_features(translator, lm, image, config)
        tops.append(_top10(explanation.counter))
        counts.append(explanation.counter.n_sentences)
    return _row(time.perf_counter() - started, counts), tops


def _batched(translator, lm, features, config) -> tuple[dict, list[list[str]]]:
    """All images through one stream: their rounds share decoding batches."""
    started, tops, counts = time.perf_counter(), [], []
    for explanation in explain_stream(translator, lm, features, config):
        tops.append(_top10(explanation.counter))
        counts.append(explanation.counter.n_sentences)
    return _row(time.perf_counter() - started, counts), tops


def _generate(translator, lm, features, sampling: SamplingConfig, words: WordConfig) -> tuple[dict, list[list[str]]]:
    """``generate(num_return_sequences=N)`` after each image's prefix; token lengths of about the same words."""
    started, tops = time.perf_counter(), []
    lengths = (sampling.min_words + 1, 2 * sampling.max_words)  # a few more tokens than words, as the sampler writes
    for image in features:
        with torch.inference_mode():
            prefix = translator(image[None].to(lm.device))[0]
        _, rows = time_generate(lm, prefix, sampling, lengths, sampling.num_samples, repeats=1)
        counter = WordCounter(words)
        counter.update(lm.tokenizer.batch_decode(rows, skip_special_tokens=True))
        tops.append(_top10(counter))
    return _row(time.perf_counter() - started, [sampling.num_samples] * len(features)), tops


def _overlap(tops: list[list[str]], reference: list[list[str]]) -> float:
    """Mean number of shared words between each image's top 10 and its reference top 10."""
    return round(sum(len(set(a) & set(b)) for a, b in zip(tops, reference)) / len(tops), 2)


def _profile(translator, lm, features, config) -> dict:
    """Where the adaptive, batched run spends its time: the LM's forward share and the heaviest functions."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in explain_stream(translator, lm, features, config):
        pass
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())  # own time summed over every function
    # the outermost forward of the LM's modeling file holds all its inner ones: its cumulative time is the LM's
    lm_total = max((row[3] for (file, _, name), row in stats.stats.items()
                    if name == "forward" and Path(file).name.startswith("modeling_")), default=0.0)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:8]
    return {"seconds": round(total, 2), "lm_forward_share": round(lm_total / total, 3) if total else None,
            "heaviest": [{"function": f"{Path(file).name}:{name}", "own_seconds": round(row[2], 2)}
                         for (file, _, name), row in top]}


if __name__ == "__main__":
    main()
