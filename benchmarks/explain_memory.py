"""Does ``explain-dataset``'s memory stay flat in the number of images? 200 against 2,000, side by side.

``explain-dataset`` keeps per image its word counts and a few example
sentences, writes every chunk of images to a Parquet part as it goes, and
holds the sentences of only the images being decoded. This benchmark checks
that: it writes a demo-world split of 2,000 images (the demo's classes and
image size, a seed the demo does not use), then runs ``texplain
explain-dataset`` as a separate process on its first 200 images and on all
2,000, each into a fresh folder, and records each process's peak resident
memory (``ru_maxrss`` of the finished child), its time and the results'
size on disk. The model is a demo run's (``make demo``), whose LM is small
enough for 2,000 images on a CPU; ``-n`` is the sentences per image.

    python benchmarks/explain_memory.py --demo texplain-demo          # about 2.5 min on 2 cores

Writes ``benchmarks/results/explain_memory.json``; the last line is
``peak_rss_ratio=<2,000 images over 200> peak_mb_200=<x> peak_mb_2000=<y>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from texplain.atomic import write_json
from texplain.demo.splits import make_shortcut_split
from texplain.demo.world_files import write_world

HERE = Path(__file__).resolve().parent
SIZES = (200, 2000)


def main() -> None:
    args = _arguments()
    settings = json.loads((args.demo / "demo_settings.json").read_text())["settings"]
    labels = _world(args.work / "world", settings, max(SIZES))
    rows = {}
    for n in SIZES:
        subset = labels.with_name(f"labels-{n}.jsonl")
        subset.write_text("".join(labels.read_text().splitlines(keepends=True)[:n]))
        rows[n] = _measure(args, subset, args.work / f"results-{n}")
        print(f"{n:5d} images: peak {rows[n]['peak_rss_mb']:7.1f} MB, {rows[n]['seconds']:6.1f} s, "
              f"results {rows[n]['results_mb']:.2f} MB")
    small, large = SIZES
    ratio = rows[large]["peak_rss_mb"] / rows[small]["peak_rss_mb"]
    write_json(args.out, {"demo": str(args.demo), "samples_per_image": args.samples, "runs": rows,
                          "peak_rss_ratio": round(ratio, 3)})
    print(f"peak_rss_ratio={ratio:.3f} peak_mb_{small}={rows[small]['peak_rss_mb']} "
          f"peak_mb_{large}={rows[large]['peak_rss_mb']}")


def _world(folder: Path, settings: dict, n: int) -> Path:
    """A demo-like labelled split of ``n`` images (all in "train"), written once; its labels.jsonl."""
    if not (folder / "labels.jsonl").is_file():
        classes = settings["classes"]
        scenes = make_shortcut_split(classes, n_train=n, n_test=3 * len(classes) ** 2, seed=settings["seed"] + 101,
                                     size=settings["image_size"])
        write_world([s for s in scenes if s.split == "train"], folder)
    return folder / "labels.jsonl"


def _measure(args: argparse.Namespace, labels: Path, out: Path) -> dict:
    """Run explain-dataset in a child process; its peak RSS (MB), seconds and results size."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "texplain", "explain-dataset", str(labels), "--translator",
               str(args.demo / "translator"), "--out", str(out), "--samples", str(args.samples), "--prior", "none"]
    started = time.perf_counter()
    # a fresh interpreter per size, so that ru_maxrss of its children is this run's alone
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL,"
             " stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    peak_kb = int(subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True,
                                 text=True).stdout.split()[-1])
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "seconds": round(seconds, 1), "results_mb": round(size / 2**20, 3)}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("texplain-demo"), help="a demo run (make demo)")
    parser.add_argument("--samples", type=int, default=50, help="sentences per image (-n)")
    parser.add_argument("--work", type=Path, default=Path("runs/explain-memory"), help="world and results folders")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "explain_memory.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
