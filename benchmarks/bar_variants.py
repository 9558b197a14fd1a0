"""BAR mitigation variants side by side: which selection rule and which way of fine-tuning on the masks.

The training split is explained once (:func:`~texplain.mitigation.selection.explain_training`),
each heat map is found once per (image, word), and every variant is then
selected, masked and fine-tuned in the same process as ``texplain mitigate``
does it (:class:`~texplain.mitigation.bench.Bench`: the last stages, early
stopping on the held-out part), for the same seeds. A variant is
``RULE-MODE``: RULE ``suspects`` (``suspects:K``: a suspect among the first
K dominant words; ``suspects@T``: a suspect said in at least a share T of
the image's sentences) or ``not-class`` (:mod:`texplain.mitigation.selection`),
MODE ``replace`` (the picked images are seen masked only, as ``texplain
mitigate`` fine-tunes by default) or ``add`` (the originals are kept and a
masked copy of each picked image is added, ``--keep-originals``), either
followed by ``+spare`` (``--spare-class``: the region of the image's
most-said class word is never masked; :func:`~texplain.mitigation.masks.spare_maps`)
by ``+person`` (each image's person, found by ``person_masks.py`` in
``--person-masks``, is never masked: the map at pixel size less the person;
random masks too) and by ``+spread`` (``--spread-masks``: images of the
less-masked classes are masked too, with borrowed maps, until every class
has the same share masked; :mod:`texplain.mitigation.spread`; with
``+person`` each image spares its own person from a borrowed map);
``plain-replace`` fine-tunes with nothing masked, the control for
fine-tuning itself; ``randmask-MODE`` is random masks of TExplain's size on
as many random images as the previous variant masked (drawn once, the same
for every seed), the control for masking itself; ``background-MODE`` masks
the whole of each image the previous variant picked, so with ``+person``
everything but the person, the control for the words' maps. ``--fill`` sets what hides
every variant's masked regions (as ``--mask-fill``), ``--grid`` and
``--window`` keep's windows (as ``--mask-grid``, ``--mask-window``);
``--maps-only`` finds each variant's maps and says how much of an image
they mask, and fine-tunes nothing. ERM's scores are printed first, and where its test errors went.
Writes ``benchmarks/results/bar/variants.md`` and ``.json``; its runs
need ``benchmarks/bar_analysis.py --head-only`` (the classifier) and ``make
flickr8k`` (the translator), as ``bar_mitigation.py``'s do.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bar_variants.py --bar runs/bar --translator runs/flickr8k/translator \\
        --variants plain-replace,suspects:1-replace,suspects:1-add,randmask-add --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bar_mitigation import DOMINANCE, bar_parser
from PIL import Image
from safetensors.torch import load_file, save_file

from texplain.atomic import write_json, write_text, writing
from texplain.attribution.fills import FILLS
from texplain.attribution.heat import resized
from texplain.data.labelled import read_labelled
from texplain.mitigation.config import MaskConfig, MitigateConfig
from texplain.mitigation.masks import heat_maps, spare_maps
from texplain.mitigation.methods.randmask import random_maps
from texplain.mitigation.methods.texplain import fine_tune_on_maps
from texplain.mitigation.runner import load_bench, summarise_runs
from texplain.mitigation.selection import choose, explain_training, train_features
from texplain.mitigation.spread import spread_count, spread_masks
from texplain.models.explainer import load_explainer
from texplain.text.class_vocabulary import load_overrides
from texplain.text.config import ClassWordConfig

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = bar_parser(__doc__.splitlines()[0], "runs/bar-variants", 1)
    parser.add_argument("--variants", default="plain-replace,suspects:1-replace,suspects:1-add,randmask-add")
    parser.add_argument("--finetune", default="last-stages", choices=("head", "last-stages", "all"),
                        help="what every variant fine-tunes, as texplain mitigate --finetune")
    parser.add_argument("--fill", default=MaskConfig().fill, choices=FILLS,
                        help="what hides every variant's masked regions, as texplain mitigate --mask-fill")
    parser.add_argument("--grid", type=int, default=MaskConfig().grid, help="keep's grid, as texplain mitigate --mask-grid")
    parser.add_argument("--window", type=int, default=MaskConfig().window,
                        help="keep's window in cells, as texplain mitigate --mask-window")
    parser.add_argument("--plan", action="store_true", help="print what each variant picks, and stop")
    parser.add_argument("--maps-only", action="store_true",
                        help="find each variant's heat maps, print how much of an image they mask, and fine-tune nothing")
    parser.add_argument("--every", type=int, default=1, help="every k-th training image only (a smoke test)")
    parser.add_argument("--person-masks", type=Path, default=None,
                        help="person_masks.py's folder of person masks, for the +person variants")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    selection = replace(MitigateConfig().selection, min_frequency=float(DOMINANCE[1]), min_lift=float(DOMINANCE[3]),
                        class_words=ClassWordConfig(overrides=load_overrides(args.class_words)))
    finetune = replace(MitigateConfig().finetune, trainable=args.finetune)
    mask = MaskConfig(fill=args.fill, grid=args.grid, window=args.window)
    config = MitigateConfig(selection=selection, finetune=finetune, mask=mask,
                            methods=("texplain",), seeds=tuple(range(args.seeds)))
    metadata = args.data / "bar" / "metadata.json"
    spec = str(args.bar / "classifier")
    train = read_labelled(metadata, split="train")[:: args.every]
    bench = load_bench(spec, train, read_labelled(metadata, split="test"), config, args.out, progress=True)
    explainer = load_explainer(args.translator, bench.classifier)
    bench.translator, bench.lm = explainer.translator, explainer.lm
    names = [bench.classifier.class_names[int(i)] for i in bench.train_labels]
    features = args.bar / "results" / "features"
    store = train_features(bench.classifier, bench.train_paths, features if features.is_dir() else args.out / "features")
    explained, vocabularies, prior = explain_training(bench.classifier, bench.translator, bench.lm, store,
                                                      bench.train_paths, names, config.selection, progress=True)
    erm = bench.score(bench.classifier, 0, {})
    rows = [score_row("ERM", None, [erm])]
    print(rows[0]["line"], flush=True)
    print("ERM's test errors went to: " + "; ".join(f"{c}: " + (", ".join(f"{o} {n}" for o, n in e.items()) or "none")
                                                   for c, e in erm["mistaken_for"].items()), flush=True)
    cache = args.out / "heats.safetensors"  # (image, word) -> heat map, kept between runs of the same --out
    heats = {(int(key.split(":", 1)[0]), key.split(":", 1)[1]): heat for key, heat in load_file(cache).items()} \
        if cache.is_file() else {}
    people = person_maps(bench, args.person_masks) if "+person" in args.variants else None
    last_count, last_fraction, last_index = 0, 0.0, []
    for variant in args.variants.split(","):
        rule, mode = variant.rsplit("-", 1)
        if rule in ("randmask", "plain", "background") and (args.plan or args.maps_only):
            continue
        if rule == "plain":
            index, maps, picked = [], [], None
        elif rule == "randmask":
            index, maps, picked = random_masks(bench, last_count, last_fraction)
            # random masks are spread over the classes already
            mode = mode.split("+")[0] + ("+person" if "+person" in mode else "")
        elif rule == "background":
            index, maps = last_index, [torch.ones(tuple(bench.train_pixels.shape[-2:])) for _ in last_index]
            picked = {"selected": len(index), "fraction": round(len(index) / len(names), 4), "rule": "background",
                      "masked": masked_count(bench, index, mode)}
        else:
            chosen = choose(explained, vocabularies, prior, selection_rule(config.selection, rule))
            print(f"{variant}: picks {len(chosen.indices())} ({100 * chosen.fraction:.1f}%): " + "; ".join(
                f"{c} {v['selected']} ({', '.join(w for w, _ in v['masked_words'][:3])})"
                for c, v in chosen.per_class().items()), flush=True)
            if args.plan:
                continue
            found = cached_maps(bench, chosen.indices(), chosen.words, heats, cache)
            if "+spare" in mode:
                spared = cached_maps(bench, [i for i in found if chosen.spared[i] is not None], chosen.spared, heats, cache)
                before = np.mean([bench.masked_fraction(h) for h in found.values()])
                kept = spare_maps(found, spared, config.mask.threshold)
                print(f"{variant}: the class word's region spared in {len(spared)} of {len(found)} maps, "
                      f"{len(found) - len(kept)} left with nothing to mask (spared words: "
                      f"{', '.join(f'{w} {k}' for w, k in Counter(chosen.spared[i] for i in spared).most_common(4))}); "
                      f"an image's mask covers {100 * before:.1f}% "
                      f"before, {100 * np.mean([bench.masked_fraction(h) for h in kept.values()]):.1f}% after", flush=True)
                found = kept
            index, maps = list(found), list(found.values())
            last_index, picked = index, chosen.to_json()
            last_count = masked_count(bench, index, mode)
            picked["masked"] = last_count
            last_fraction = float(np.mean([bench.masked_fraction(h) for h in maps]))
            if "+person" in mode:
                kept = spare_people(bench, found, people)
                print(f"{variant}: with the person spared ({sum(i in people for i in found)} of {len(found)} images "
                      f"have one) an image's mask covers {100 * last_fraction:.1f}% before, "
                      f"{100 * np.mean([bench.masked_fraction(h) for h in kept.values()]):.1f}% after; "
                      f"{len(found) - len(kept)} left with nothing to mask", flush=True)
            if args.maps_only:
                print(f"{variant}: {len(maps)} maps mask {100 * last_fraction:.1f}% of an image", flush=True)
                continue
        runs = [bench.score(fine_tuned(bench, index, maps, mode, seed, people), seed, {}) for seed in config.seeds]
        rows.append(score_row(variant, picked, runs))
        print(rows[-1]["line"], flush=True)
    minutes = (time.perf_counter() - started) / 60
    if args.plan or args.maps_only:
        return 0
    write_json(args.results / "variants.json", {"rows": rows, "seeds": list(config.seeds), "minutes": round(minutes, 1)})
    write_text(args.results / "variants.md", table(rows, config.seeds, minutes, " ".join(sys.argv[1:])))
    print(f"written {args.results / 'variants.md'} in {minutes:.0f} min")
    return 0


def selection_rule(selection, rule: str):
    """``suspects``, ``suspects:K`` (a suspect among the first K dominant words), ``suspects@T`` (a suspect said in at
    least a share T of the image's sentences, as ``--select-threshold``) or ``not-class`` as a selection config."""
    rule, _, threshold = rule.partition("@")
    name, _, top = rule.partition(":")
    return replace(selection, rule=name, top=int(top) if top else selection.top,
                   threshold=float(threshold) if threshold else None)


def cached_maps(bench, positions: list[int], words: list[str | None], heats: dict, cache: Path) -> dict[int, torch.Tensor]:
    """Each position's heat map behind its word (``words[i]``), found once per (image, word): ``heats`` holds those
    found before and is saved to ``cache`` with the new ones; all-zero maps are left out."""
    wanted = [i for i in positions if (i, words[i]) not in heats]
    found, _ = heat_maps(bench.classifier, bench.translator, bench.lm, bench.train_pixels, wanted, words,
                         bench.train_labels, bench.config.mask, progress=True)
    heats.update({(i, words[i]): h for i, h in found.items()})
    with writing(cache) as temporary:
        save_file({f"{i}:{word}": heat.contiguous() for (i, word), heat in heats.items()}, temporary)
    return {i: heats[i, words[i]] for i in positions if (i, words[i]) in heats}


def random_masks(bench, count: int, fraction: float) -> tuple[list[int], list[torch.Tensor], dict]:
    """``count`` random training images with random maps covering ``fraction`` of each on average (as RandMask)."""
    n = len(bench.train_labels)
    index, maps = random_maps(bench.train_pixels, count, torch.Generator().manual_seed(0))
    quantile = torch.quantile(torch.stack([m.flatten() for m in maps]), 1.0 - fraction) if maps else 0.5
    maps = [(m >= quantile).float() for m in maps]  # covers ``fraction`` at any threshold in (0, 1]
    return index, maps, {"selected": len(index), "fraction": round(len(index) / n, 4), "rule": "random"}


def masked_count(bench, index: list[int], mode: str) -> int:
    """How many images a variant masks: its picked positions ``index``, spread over the classes for a ``+spread``
    mode (:func:`~texplain.mitigation.spread.spread_count`)."""
    if not mode.endswith("+spread"):
        return len(index)
    return spread_count(bench.train_labels, index, len(bench.classifier.class_names))


def person_maps(bench, folder: Path | None) -> dict[int, torch.Tensor]:
    """Each training image's person, a probability (H, W) in [0, 1] on the pixels the classifier sees, from
    ``person_masks.py``'s PNGs in ``folder`` (by image stem); an image without one is left out. The PNG goes through
    the classifier's own preprocessing as a photo does, and the normalisation is undone from a black and a white
    image's values, so any resize and crop lands the mask where the photo's pixels went."""
    if folder is None or not folder.is_dir():
        raise SystemExit(f"{folder}: a +person variant needs --person-masks, a folder made by person_masks.py")
    preprocess = bench.classifier.preprocess
    black, white = (float(preprocess(Image.new("RGB", (64, 64), (v, v, v)))[0, 0, 0]) for v in (0, 255))
    people = {}
    for i, path in enumerate(bench.train_paths):
        png = folder / f"{Path(path).stem}.png"
        if png.is_file():
            people[i] = ((preprocess(Image.open(png).convert("RGB"))[0] - black) / (white - black)).clamp(0, 1)
    print(f"a person found in {len(people)} of {len(bench.train_paths)} training images", flush=True)
    return people


def spare_people(bench, maps: dict[int, torch.Tensor], people: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The maps (position -> map, any size) at the images' pixel size less each image's person
    (:func:`~texplain.mitigation.masks.spare_maps`); a map with nothing left to mask is left out. A map is resized
    as ``region`` resizes it, so the threshold means what it meant."""
    size = tuple(bench.train_pixels.shape[-2:])
    return spare_maps({i: resized(m, size) for i, m in maps.items()}, {i: people[i] for i in maps if i in people},
                      bench.config.mask.threshold)


def fine_tuned(bench, index: list[int], maps: list[torch.Tensor], mode: str, seed: int,
               people: dict[int, torch.Tensor] | None = None):
    """The classifier fine-tuned with the images at ``index`` masked by ``maps``, in their place or as added copies,
    spread over the classes for a ``+spread`` mode, each image's person spared for a ``+person`` mode (after
    spreading, so that a borrowed map spares its borrower's person; nothing masked: fine-tuned on the training split
    as it is)."""
    if not index:
        return bench.fine_tune(bench.train_pixels, bench.tuned, bench.held, seed, "plain")[0]
    spread = mode.endswith("+spread")
    if "+person" in mode:
        if spread:
            classes = len(bench.classifier.class_names)
            index, maps = spread_masks(bench.train_labels, index, maps, classes, torch.Generator().manual_seed(seed))
        kept = spare_people(bench, dict(zip(index, maps)), people)
        index, maps, spread = list(kept), list(kept.values()), False
    bench.config = replace(bench.config, keep_originals=mode.startswith("add"), spread_masks=spread)
    return fine_tune_on_maps(bench, index, maps, seed, "variant")[0]


def score_row(name: str, picked: dict | None, runs: list[dict]) -> dict:
    """Mean and spread of the worst class and overall over seeds, per class means, and what was picked."""
    summary = summarise_runs(runs)
    classes = {c: round(100 * v["mean"], 1) for c, v in summary["per_class"].items()}
    row = {"variant": name, "worst": round(100 * summary["worst_group"]["mean"], 1),
           "worst_std": round(100 * summary["worst_group"]["std"], 1), "overall": round(100 * summary["average"]["mean"], 1),
           "overall_std": round(100 * summary["average"]["std"], 1), "per_class": classes}
    if picked is not None:
        row["selected"] = picked["selected"]
        row["fraction"] = picked["fraction"]
        row["masked"] = picked.get("masked", picked["selected"])
        row["per_class_picked"] = {c: [v["selected"], v["masked_words"][:4], v["suspects"]]
                                   for c, v in picked.get("per_class", {}).items()}
    row["line"] = (f"{name}: worst {row['worst']} ± {row['worst_std']}, overall {row['overall']} ± {row['overall_std']}"
                   + (f", picked {row['selected']} ({100 * row['fraction']:.1f}%), masked {row['masked']}" if picked else "")
                   + " | " + ", ".join(f"{c} {a}" for c, a in classes.items()))
    return row


def table(rows: list[dict], seeds, minutes: float, command: str) -> str:
    classes = list(rows[0]["per_class"])
    lines = [f"BAR test accuracy (%), mean ± std over seeds {', '.join(map(str, seeds))}; made by "
             f"`python benchmarks/bar_variants.py {command}` in {minutes:.0f} min.", "",
             "| Variant | Picked | Worst class | Overall | " + " | ".join(classes) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(classes)]
    for r in rows:
        picked = f"{r['selected']} ({100 * r['fraction']:.1f}%)" if "selected" in r else ""
        picked += f", {r['masked']} masked" if r.get("masked", r.get("selected")) != r.get("selected") else ""
        lines.append(f"| {r['variant']} | {picked} | {r['worst']} ± {r['worst_std']} | {r['overall']} ± {r['overall_std']} | "
                     + " | ".join(str(r["per_class"][c]) for c in classes) + " |")
    picks = [r for r in rows if r.get("per_class_picked")]
    for r in picks:
        lines += ["", f"{r['variant']}: per class, images picked, the words masked most, the suspects:"]
        lines += [f"- {c}: {n}; {', '.join(f'{w} ({k})' for w, k in words) or 'none'}; {', '.join(s) or '-'}"
                  for c, (n, words, s) in r["per_class_picked"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run())
