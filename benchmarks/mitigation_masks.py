"""Which heat map and which fill: measured on the demo world, where every object's mask is known.

For the biased training images of a demo run (``texplain demo``), the word of
each image's background ("water", "snow", "sand") is localised by each heat
method, masked at the default threshold, and the mask is compared with the
scene's true object mask (the synthetic world draws it, so it is exact):

* ``background_precision``: the share of masked pixels that are background
  (1: the mask never touches the object);
* ``object_hidden``: the share of the object's pixels that were masked (0 is right);
* ``background_hidden``: the share of the background's pixels that were masked (the
  shortcut hidden: 1 is right);
* ``area``: the share of the image masked; ``zero_maps``: maps with no positive value.

``..._spare_class`` rows take the region of the class's own word out of the
background word's map first (``texplain mitigate --spare-class``,
:func:`~texplain.mitigation.masks.spare_maps`); ``emptied`` counts the maps
left with nothing to mask (measured as masking nothing; no precision).

Then each fill is applied to the true background (the object kept) and a
logistic regression on the masked pixels tries to tell the class: the higher
its held-out accuracy above what the object alone allows, the more class cue
the fill leaves. Writes ``benchmarks/results/mitigation_masks.json``.

    texplain demo --out runs/demo && python benchmarks/mitigation_masks.py --demo runs/demo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from texplain.atomic import write_json
from texplain.attribution.fills import FILLS, mask_batch
from texplain.attribution.heat import region
from texplain.data.labelled import read_labelled
from texplain.demo.captions import BACKGROUND_WORDS
from texplain.demo.config import DemoConfig
from texplain.demo.splits import make_shortcut_split
from texplain.mitigation.config import MaskConfig
from texplain.mitigation.masks import cam_layer, localise, spare_maps
from texplain.models.explainer import load_explainer
from texplain.training.classifier_training import label_indices, load_pixels

HERE = Path(__file__).resolve().parent
HEATS = {
    "keep_8_window_2": MaskConfig(heat="keep", grid=8, window=2),
    "keep_8_window_1": MaskConfig(heat="keep", grid=8, window=1),
    "gradcam_features": MaskConfig(heat="gradcam", layer="features"),
    "gradcam_auto": MaskConfig(heat="gradcam", layer="auto"),
    "gradcam_auto_t0.3": MaskConfig(heat="gradcam", layer="auto", threshold=0.3),
    "gradcam_auto_t0.2": MaskConfig(heat="gradcam", layer="auto", threshold=0.2),
    "occlusion_8": MaskConfig(heat="occlusion", grid=8),
}
SPARED = ("keep_8_window_2", "gradcam_auto")
"""The heat methods measured again with the class word's region spared."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="a texplain demo run folder")
    parser.add_argument("--images", type=int, default=150, help="biased training images measured")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mitigation_masks.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    explainer = load_explainer(args.demo / "translator", str(args.demo / "classifier"), str(args.demo / "lm"))
    scenes, items = _training_scenes(args.demo, args.images)
    pixels = load_pixels(explainer.classifier, items)  # (n, 3, H, W)
    labels = label_indices(items, explainer.classifier.class_names)
    objects = torch.stack([torch.from_numpy(s.foreground_mask()) for s in scenes])  # (n, H, W)
    heats = {name: _measure(explainer, pixels, labels, scenes, objects, mask) for name, mask in HEATS.items()}
    heats |= {f"{name}_spare_class": _measure(explainer, pixels, labels, scenes, objects, HEATS[name], spare=True)
              for name in SPARED}
    fills = _fill_cues(pixels, labels, objects)
    write_json(args.out, {"demo": str(args.demo), "images": len(items), "heat": heats, "fill_probe_accuracy": fills})
    for name, row in heats.items():
        print(f"{name:18s} background precision {row['background_precision']:.3f}  object hidden {row['object_hidden']:.3f}  "
              f"background hidden {row['background_hidden']:.3f}  area {row['area']:.3f}  zero maps {row['zero_maps']}  "
              f"emptied {row['emptied']}  ({row['layer']})")
    print("class probe accuracy on background-masked images, by fill:", fills)


def _training_scenes(demo: Path, limit: int):
    """The demo's training scenes, drawn again from its settings, with their written images."""
    saved = json.loads((demo / "demo_settings.json").read_text())["settings"]
    settings = DemoConfig(**{k: v for k, v in saved.items() if k in DemoConfig.__dataclass_fields__})
    scenes = make_shortcut_split(settings.classes, n_train=settings.train_images, n_test=settings.test_images,
                                 bias=settings.bias, seed=settings.seed + 1, size=settings.image_size,
                                 balanced=settings.balanced)
    items = read_labelled(demo / "world/split/labels.jsonl", split="train")
    train = [s for s in scenes if s.split == "train"]
    if len(train) != len(items):
        raise SystemExit("the demo's world does not match its settings")
    return train[:limit], items[:limit]


def _measure(explainer, pixels, labels, scenes, objects, mask: MaskConfig, spare: bool = False) -> dict:
    """Mask quality of one heat method against the true object masks (with ``spare``, less the class word's region)."""
    started = time.perf_counter()
    layer = cam_layer(explainer.classifier, pixels, mask)
    precision, hidden, background, area, zero, emptied = [], [], [], [], 0, 0
    for i, scene in enumerate(scenes):
        heat = localise(explainer.classifier, explainer.translator, explainer.lm, pixels[i : i + 1],
                        BACKGROUND_WORDS[scene.background], int(labels[i]), mask, layer).cpu()
        if heat.max() <= 0:
            zero += 1
            continue
        if spare:
            word = explainer.classifier.class_names[int(labels[i])]
            kept = spare_maps({0: heat}, {0: localise(explainer.classifier, explainer.translator, explainer.lm,
                                                      pixels[i : i + 1], word, int(labels[i]), mask, layer).cpu()},
                              mask.threshold)
            emptied += not kept
            heat = kept.get(0, torch.zeros_like(heat))
        masked = region(heat, tuple(objects.shape[-2:]), mask.threshold)  # (H, W)
        on_object = (masked & objects[i]).sum().item()
        if masked.any():  # an emptied map masks nothing: no precision to take
            precision.append(1 - on_object / masked.sum().item())
        hidden.append(on_object / max(objects[i].sum().item(), 1))
        background.append((masked & ~objects[i]).sum().item() / max((~objects[i]).sum().item(), 1))
        area.append(masked.float().mean().item())
    return {"layer": f"{mask.where(layer)}, threshold {mask.threshold}",
            "background_precision": round(float(np.mean(precision)), 4), "object_hidden": round(float(np.mean(hidden)), 4),
            "background_hidden": round(float(np.mean(background)), 4),
            "area": round(float(np.mean(area)), 4), "zero_maps": zero, "emptied": emptied, "seconds": round(time.perf_counter() - started, 1)}


def _fill_cues(pixels, labels, objects) -> dict:
    """Held-out accuracy of a class probe on images whose true background is filled, per fill, and on the objects alone."""
    background = (~objects).float()  # (n, H, W): a heat map that is exactly the background
    generator = torch.Generator().manual_seed(0)
    out = {}
    for fill in FILLS:
        masked, _ = mask_batch(pixels, list(background), 0.5, fill, generator, donors=pixels)
        out[fill] = _probe(masked, labels)
    out["object_on_black"] = _probe(pixels * objects[:, None].float(), labels)
    return out


def _probe(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Held-out (last quarter) accuracy of a logistic regression on 16 x 16 downsampled pixels."""
    x = torch.nn.functional.adaptive_avg_pool2d(images.float(), 16).flatten(1)
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-6)
    cut = 3 * len(x) // 4
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.01, weight_decay=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(x[:cut]), labels[:cut]).backward()
        optimizer.step()
    return round(float((layer(x[cut:]).argmax(1) == labels[cut:]).float().mean()), 4)


if __name__ == "__main__":
    main()
