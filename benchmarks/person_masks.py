"""Where the person is in each photo of a folder: MediaPipe's pose model with its segmentation, offline.

BAR's masks must hide the place an action is shot in, not the actor, and the
translator's heat maps cannot tell the two apart (``results/bar/grid/maps.md``:
the actor's region covers about three quarters of the place's at any grid). A
person segmentation can: ``bar_variants.py --person-masks`` spares each image's
person from its mask (on BAR that takes a mask from 47.4% of an image to 44.3%
only: the masks hide the place; ``results/bar/person/``). MediaPipe 0.10.14's wheel carries its pose model
(``pose_landmark_full.tflite``; the newest, 1.2.3, carries none), so nothing is
downloaded; it pins protobuf below 5, so it gets its own virtual environment and
runs this script alone (it needs neither torch nor texplain).

Writes ``OUT/<image stem>.png``: the person's probability (0-255) at the
image's own size, for each image where the pose model finds one person (the
most prominent); no file where it finds none.

    python3 -m venv .mediapipe && .mediapipe/bin/pip install mediapipe==0.10.14
    .mediapipe/bin/python benchmarks/person_masks.py ../shared/data/bar/train runs/bar/person
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="a folder of photos")
    parser.add_argument("out", type=Path, help="where the person masks go")
    args = parser.parse_args(argv)
    try:
        from mediapipe.python.solutions.pose import Pose
    except ImportError:
        print("person_masks: needs mediapipe==0.10.14 (see this script's docstring)", file=sys.stderr)
        return 2
    if not args.images.is_dir():
        print(f"{args.images}: no such folder", file=sys.stderr)
        return 2
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in SUFFIXES)
    args.out.mkdir(parents=True, exist_ok=True)
    started, found = time.perf_counter(), 0
    with Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True) as pose:
        for path in paths:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            result = pose.process(rgb)
            if result.segmentation_mask is None:
                continue
            found += 1
            target = args.out / f"{path.stem}.png"
            temporary = target.with_name(f".{target.name}.tmp")
            Image.fromarray(np.clip(result.segmentation_mask * 255, 0, 255).astype(np.uint8)).save(temporary, "PNG")
            os.replace(temporary, target)
    print(f"person_masks: a person in {found} of {len(paths)} photos ({time.perf_counter() - started:.0f} s), in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
