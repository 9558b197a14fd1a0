"""Real-data check: explain Flickr8k dev photos and set their top words beside the human captions.

Needs a translator trained for EfficientNet-Lite0 on Flickr8k train (``make flickr8k``)::

    make flickr8k
    python benchmarks/flickr_check.py --translator runs/flickr8k/translator

Writes ``benchmarks/results/flickr_check.md`` (a markdown table) and the
per-image JSON and word clouds under ``--out``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from texplain.atomic import write_text
from texplain.data.captions import read_captions
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.models.explainer import load_explainer
from texplain.report.explained_images import explain_images
from texplain.text.config import WordConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "captions.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translator", type=Path, required=True)
    parser.add_argument("--captions", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=10, help="dev photos to explain")
    parser.add_argument("--samples", type=int, default=200, help="sentences per photo")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flickr_check"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    references = defaultdict(list)
    for pair in read_captions(args.captions, split="dev"):
        references[str(pair.image)].append(pair.caption)
    paths = sorted(references)[: args.images]
    explainer = load_explainer(args.translator)
    config = ExplainConfig(
        sampling=SamplingConfig(num_samples=args.samples, min_words=8, max_words=20, seed=args.seed),
        words=WordConfig(top_k=10),
    )
    records, _ = explain_images(explainer, paths, args.out, config)
    lines = [
        f"Flickr8k dev, {len(records)} photos, {args.samples} sentences each, translator {args.translator}",
        "",
        "| photo | top-10 words (fraction of sentences) | classifier top-1 | first human caption |",
        "|---|---|---|---|",
    ]
    for record in records:
        words = ", ".join(f"{w['word']} {w['frequency']:.2f}" for w in record["top_words"][:10])
        top1 = record["prediction"][0]["name"]
        lines.append(f"| {Path(record['image']).name} | {words} | {top1} | {references[record['image']][0]} |")
    table = "\n".join(lines) + "\n"
    write_text(Path("benchmarks/results/flickr_check.md"), table)
    print(table)


if __name__ == "__main__":
    main()
