"""The only-background test (paper 4.1, Figs. 2 and 6): hide the object, see what remains.

If a classifier still says "bird" when the bird is gone, and the explanation
of the hidden image still says "water", the classifier decides from the
background. The test needs each image twice, explained with the same
settings: as it is, and with its foreground hidden. The hidden set comes
either from given masks (:func:`write_hidden_set`: mask pixels filled with a
flat colour, the "only background, black" variant of ImageNet-9) or from a
generator that can draw a scene without its objects (the demo world's
``only_bg`` set).

Originals and hidden images are paired (:func:`pair_rows`) by file name when
the names match one to one, otherwise by order within each (label, split,
group), which is how the demo world writes its only-background twin.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from texplain.analysis.results import ResultsFolder
from texplain.atomic import write_text, writing
from texplain.data.files import check_not_inputs
from texplain.data.images import load_image, load_rgb
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.optional import require
from texplain.text.words import rank_words

log = logging.getLogger(__name__)

FILL = (0, 0, 0)
"""Colour of hidden pixels: black, as ImageNet-9's only-background images."""

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_COLOUR = "#d62728"
"""Red for the true class in the top-5 plots, as the class word in the word clouds."""
OTHER_COLOUR = "#4c72b0"


@dataclass
class OnlyBackgroundClass:
    """One class's only-background result.

    persists: fraction of images whose top-1 prediction is unchanged when
    the foreground is hidden; still_label: fraction still predicted as their
    label. top_words: the hidden images' pooled words (frequency);
    remaining: the originals' top non-class words still among them.
    class_word: fraction of sentences saying the class (original, hidden).
    examples: (original row, hidden row) pairs shown in the report.
    """

    name: str
    images: int
    persists: float
    still_label: float
    top_words: list[tuple[str, float]]
    remaining: list[str]
    class_word: tuple[float, float]
    examples: list[tuple[dict, dict]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "images": self.images, "persists": round(self.persists, 4),
                "still_label": round(self.still_label, 4),
                "top_words": [{"word": w, "frequency": round(f, 4)} for w, f in self.top_words],
                "remaining": self.remaining,
                "class_word": {"original": round(self.class_word[0], 4), "hidden": round(self.class_word[1], 4)},
                "examples": [{"original": o["image"], "hidden": h["image"]} for o, h in self.examples]}


ROW_COLUMNS = ["image", "label", "split", "group", "predicted", "confidence", "top5", "n_sentences", "words",
               "class_mentions", "top_word", "sentences"]


def pair_rows(original: ResultsFolder, hidden: ResultsFolder) -> list[tuple[dict, dict]]:
    """Pair every hidden row with its original row (see the module docstring); unpaired rows are an error."""
    hidden_rows = list(hidden.iter_rows(ROW_COLUMNS))
    if not hidden_rows:
        raise TexplainError(f"{hidden.folder}: no explained images in the only-background results")
    wanted = {_name_key(r) for r in hidden_rows}
    originals = list(original.iter_rows(ROW_COLUMNS))
    by_name: dict[tuple, list[dict]] = defaultdict(list)
    for row in originals:
        if _name_key(row) in wanted:
            by_name[_name_key(row)].append(row)
    if len(by_name) == len(wanted) == len(hidden_rows) and all(len(rows) == 1 for rows in by_name.values()):
        pairs = [(by_name[_name_key(h)][0], h) for h in hidden_rows]
        _check_labels(pairs)
        return pairs
    return _pair_by_order(originals, hidden_rows, hidden.folder)


def _name_key(row: dict) -> tuple:
    """What pairs by name: the split and the file name without its suffix (hidden copies may be PNGs)."""
    return row["split"], Path(row["image"]).stem


def _pair_by_order(originals: list[dict], hidden_rows: list[dict], where: Path) -> list[tuple[dict, dict]]:
    """Pair the i-th hidden image of each (label, split, group) with the i-th original of it."""
    def key(row: dict) -> tuple:
        return row["label"], row["split"], row["group"]

    queues: dict[tuple, list[dict]] = defaultdict(list)
    for row in originals:
        queues[key(row)].append(row)
    hidden_sizes = Counter(key(h) for h in hidden_rows)
    unmatched = [k for k, n in hidden_sizes.items() if len(queues.get(k, [])) != n]
    if unmatched:
        label, split, group = unmatched[0]
        raise TexplainError(
            f"{where}: cannot pair the only-background images with the originals: file names differ and "
            f"label {label!r}, split {split!r}, group {group!r} has {hidden_sizes[unmatched[0]]} hidden images "
            f"but {len(queues.get(unmatched[0], []))} originals"
        )
    seen: Counter = Counter()
    pairs = []
    for row in hidden_rows:
        pairs.append((queues[key(row)][seen[key(row)]], row))
        seen[key(row)] += 1
    log.info("paired %d only-background images with their originals by order within label, split and group", len(pairs))
    return pairs


def _check_labels(pairs: Iterable[tuple[dict, dict]]) -> None:
    """A pair whose labels differ means the names matched by accident."""
    for original, hidden in pairs:
        if original["label"] != hidden["label"]:
            raise TexplainError(
                f"{hidden['image']}: labelled {hidden['label']!r} but its original {original['image']} is {original['label']!r}"
            )


def summarise(
    pairs: Sequence[tuple[dict, dict]], vocabularies: dict[str, frozenset[str]], by: str = "label",
    top_words: int = 10, examples: int = 3,
) -> dict[str, OnlyBackgroundClass]:
    """Per class (the originals' ``label`` or ``predicted``): persistence, remaining words, example pairs."""
    groups: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for original, hidden in pairs:
        groups[original[by]].append((original, hidden))
    out = {}
    for name, group in sorted(groups.items()):
        vocabulary = vocabularies.get(name, frozenset({name}))
        original_top = [w for w, _ in _pooled(o for o, _ in group) if w not in vocabulary][:top_words]
        hidden_words = _pooled(h for _, h in group)
        hidden_top = [(w, f) for w, f in hidden_words if w not in vocabulary][:top_words]
        kept = {w for w, _ in hidden_top}
        ranked = sorted(group, key=lambda pair: (-_prob(pair[1], pair[0]["predicted"]), pair[0]["image"]))
        out[name] = OnlyBackgroundClass(
            name=name,
            images=len(group),
            persists=sum(h["predicted"] == o["predicted"] for o, h in group) / len(group),
            still_label=sum(h["predicted"] == o["label"] for o, h in group) / len(group),
            top_words=hidden_top,
            remaining=[w for w in original_top if w in kept],
            class_word=(_mention_rate((o for o, _ in group), name), _mention_rate((h for _, h in group), name)),
            examples=ranked[:examples],
        )
    return out


def _pooled(rows: Iterable[dict]) -> list[tuple[str, float]]:
    """Pooled document frequencies of some rows, most frequent first."""
    counts: Counter = Counter()
    n = 0
    for row in rows:
        counts.update({w["word"]: w["count"] for w in row["words"]})
        n += row["n_sentences"]
    return [(w, c / n) for w, c in rank_words(counts)] if n else []


def _mention_rate(rows: Iterable[dict], name: str) -> float:
    """Fraction of the rows' sentences that say the class by any of its words."""
    said = total = 0
    for row in rows:
        said += sum(m["count"] for m in row["class_mentions"] if m["name"] == name)
        total += row["n_sentences"]
    return said / total if total else 0.0


def _prob(row: dict, name: str) -> float:
    """The row's top-5 probability of class ``name`` (0 when it is not in the top 5)."""
    return next((c["prob"] for c in row["top5"] if c["name"] == name), 0.0)


def plot_top5(original: dict, hidden: dict, path: str | os.PathLike, title: str = "") -> Path:
    """Two bar charts side by side, the top-5 predictions of the original and of the hidden image (PNG)."""
    require("matplotlib", "top-5 plots").use("Agg")
    plt = require("matplotlib.pyplot", "top-5 plots")
    path = Path(path)
    figure, axes = plt.subplots(1, 2, figsize=(7.5, 2.4), sharex=True)
    for axis, row, caption in ((axes[0], original, "original"), (axes[1], hidden, "foreground hidden")):
        top = row["top5"][::-1]
        colours = [LABEL_COLOUR if c["name"] == original["label"] else OTHER_COLOUR for c in top]
        axis.barh([c["name"] for c in top], [c["prob"] for c in top], color=colours)
        axis.set_xlim(0, 1)
        axis.set_title(caption, fontsize=9)
        axis.tick_params(labelsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    with writing(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)
    return path


def hide_foreground(image: Image.Image, mask: np.ndarray, fill: tuple[int, int, int] = FILL) -> Image.Image:
    """The image with every mask pixel (bool array, H x W) set to ``fill``."""
    pixels = np.array(image.convert("RGB"))
    if mask.shape != pixels.shape[:2]:
        raise TexplainError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {pixels.shape[1]}x{pixels.shape[0]}")
    pixels[mask] = fill
    return Image.fromarray(pixels)


def write_hidden_set(
    items: Sequence[LabelledImage], masks: str | os.PathLike, out: str | os.PathLike, fill: tuple[int, int, int] = FILL,
    inputs: Sequence[str | os.PathLike] = (),
) -> list[LabelledImage]:
    """Hide each image's foreground with its mask and write the copies and a ``labels.jsonl`` to ``out``.

    A mask is the image file ``masks/<image stem>.<png|bmp|tif|jpg>``, foreground
    where it is non-zero, the same size as its image. The copies keep their
    file names (so they pair by name) under ``out/<split or all>/``. Every
    output is settled before any work: it lies inside ``out`` (a split is a
    plain folder name, never ``..`` or a path) and replaces no image, no mask
    and none of ``inputs`` (the listing the items came from).
    """
    import json

    masks, out = Path(masks), Path(out)
    if not masks.is_dir():
        raise TexplainError(f"{masks}: no such mask folder")
    stems = Counter((item.split, item.path.stem) for item in items)
    repeated = [stem for stem, n in stems.items() if n > 1]
    if repeated:
        raise TexplainError(
            f"two images share the name {repeated[0][1]!r} in split {repeated[0][0]!r}; masks are matched by name"
        )
    targets = [_hidden_copy(item, out) for item in items]
    mask_paths = [_mask_of(item, masks) for item in items]
    check_not_inputs([*targets, out / "labels.jsonl"], [*(item.path for item in items), *mask_paths, *inputs])
    hidden, lines = [], []
    for item, target, mask_path in zip(items, targets, mask_paths):
        image, mask = load_rgb(item.path), _foreground(load_image(mask_path))
        try:
            image = hide_foreground(image, mask, fill)
        except TexplainError as exc:
            raise TexplainError(f"{mask_path}: {exc}") from exc
        with writing(target) as tmp:
            image.save(tmp, format="PNG")
        hidden.append(LabelledImage(target, item.label, item.split, item.group))
        record = {"path": str(target.relative_to(out)), "label": item.label, "split": item.split, "group": item.group}
        lines.append(json.dumps(record))
    write_text(out / "labels.jsonl", "\n".join(lines) + "\n")
    return hidden


def _hidden_copy(item: LabelledImage, out: Path) -> Path:
    """``out/<split or all>/<stem>.png``, refused unless it lies inside ``out`` (no ``..``, no path, no link out)."""
    folder = item.split or "all"
    if folder in (".", "..") or any(c in folder for c in "/\\\0"):
        raise TexplainError(f"{item.path}: split {folder!r} cannot name a folder under --out "
                            "(a plain name, without / or ..)")
    target = out / folder / (item.path.stem + ".png")
    if not target.resolve().is_relative_to(out.resolve()):
        raise TexplainError(f"{target}: lies outside --out {out} (through a link); choose another --out")
    return target


def _mask_of(item: LabelledImage, masks: Path) -> Path:
    """The mask file of ``item``: ``masks/<stem>`` with one of :data:`MASK_SUFFIXES`."""
    for suffix in MASK_SUFFIXES:
        if (masks / (item.path.stem + suffix)).is_file():
            return masks / (item.path.stem + suffix)
    raise TexplainError(f"{item.path}: no mask {masks / item.path.stem}.png (or .bmp, .tif, .jpg)")


def _foreground(mask: Image.Image) -> np.ndarray:
    """Where a mask of any mode is non-zero (bool, H x W): gray and 16-bit levels as they are, colours as their gray."""
    if mask.mode in ("1", "L", "I", "I;16", "I;16L", "I;16B", "F"):
        return np.array(mask) > 0
    return np.array(mask.convert("L")) > 0
