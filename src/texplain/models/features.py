"""Extract a frozen classifier's features once and keep them on disk.

A feature store is a folder:

- ``meta.json``: classifier spec, feature layer, token shape (T, D), dtype,
  class names: what a translator checkpoint is checked against;
- ``shard_00000.safetensors`` …: ``features`` (n, T, D) for up to
  ``shard_size`` images each, and beside each ``shard_00000.rows.json``:
  one row per image: path (the store's key), row, the classifier's top-5
  classes with probabilities, and any metadata given (label, split,
  captions…);
- ``index.json``: the rows of a store written before shards carried their
  own; still read.

A shard is written whole to a temporary name and renamed, then its rows the
same way; a shard without its rows file is not part of the store. So a
killed extraction keeps every finished shard, a second run only extracts
what is missing, and several processes (training processes, Ray actors) can
add to one store at once: each writes shards under its own ``writer`` name,
and nothing is rewritten that another reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from texplain.atomic import write_json, writing
from texplain.data.files import load_json
from texplain.data.images import decode_rgb, load_rgb
from texplain.errors import BadImageError, TexplainError
from texplain.locking import locked_folder
from texplain.models.classifiers import Classifier
from texplain.models.config import ExtractionConfig
from texplain.models.translator import same_name
from texplain.progress import tqdm
from texplain.weights import open_safetensors

log = logging.getLogger(__name__)

META_FILE = "meta.json"
INDEX_FILE = "index.json"
ROWS_SUFFIX = ".rows.json"
TOP_K = 5
TOP5 = "top5"
CACHED_SHARDS = 4
"""Shards whose whole rows :meth:`FeatureStore.row` keeps after reading them (reads go shard by shard)."""


@dataclass
class ImageItem:
    """One image to extract: its key in the store, its index metadata, and where its bytes are.

    ``data`` holds the encoded image of a sample streamed from a WebDataset
    or Parquet set; without it the key is a file path.
    """

    key: str
    metadata: Mapping = field(default_factory=dict)
    data: bytes | None = None

    def read(self) -> Image.Image:
        """The image as 8-bit RGB; a :class:`~texplain.errors.BadImageError` when it cannot be read."""
        return load_rgb(self.key) if self.data is None else decode_rgb(self.data, self.key)


class FeatureStore:
    """Read access to a feature folder: ``features(paths)`` → (B, T, D) float32.

    ``rows`` holds every image's row in memory without its top-5 classes,
    which :meth:`row` reads back from the shard's rows file when asked: a
    caption set of millions of images is indexed in a few hundred bytes
    each.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.is_file():
            raise TexplainError(f"{self.folder}: not a feature store (no {META_FILE})")
        self.meta: dict = load_json(meta_path)
        self.rows: dict[str, dict] = {}
        index_path = self.folder / INDEX_FILE
        for row in load_json(index_path) if index_path.is_file() else []:
            self.rows[row["path"]] = row  # a legacy store's rows, kept whole
        for rows_file in sorted(self.folder.glob(f"shard_*{ROWS_SUFFIX}")):
            self._add(load_json(rows_file))
        self._shards: dict[int | str, object] = {}
        self._whole: dict[str, dict[str, dict]] = {}  # the whole rows of the shards read last, by shard

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, path: object) -> bool:
        return _key(path) in self.rows

    @property
    def token_shape(self) -> tuple[int, int]:
        """(T, D): tokens per image and their width."""
        return tuple(self.meta["token_shape"])

    @property
    def paths(self) -> list[str]:
        return list(self.rows)

    def nbytes(self, images: int) -> int:
        """Bytes that the features of ``images`` images take in memory, as stored."""
        t, d = self.token_shape
        return images * t * d * (2 if self.meta["fp16"] else 4)

    def row(self, path: str | os.PathLike) -> dict:
        """The index row of one image (top-5 classes and metadata)."""
        row = self._indexed(path)
        if TOP5 in row:
            return row
        shard = row["shard"]
        whole = self._whole.get(shard) or self._remember(shard, load_json(self.folder / f"{shard}{ROWS_SUFFIX}"))
        return whole[row["path"]]

    def features(self, paths: Sequence[str | os.PathLike]) -> Tensor:
        """Features of the given images, (B, T, D) float32, read from memory-mapped shards."""
        rows = [self._indexed(p) for p in paths]
        out = [self._shard(r["shard"]).get_slice("features")[r["row"] : r["row"] + 1] for r in rows]
        return torch.cat(out).float()

    def load_all(self, paths: Sequence[str | os.PathLike]) -> Tensor:
        """Like :meth:`features` but reads each shard once, in the stored dtype: the fast path for a training set."""
        keys = [_key(p) for p in paths]
        by_shard: dict[int | str, list[int]] = {}
        for i, k in enumerate(keys):
            by_shard.setdefault(self._indexed(k)["shard"], []).append(i)
        shape = self.token_shape
        out = torch.empty((len(keys), *shape), dtype=torch.float16 if self.meta["fp16"] else torch.float32)
        for shard, positions in by_shard.items():
            block = self._shard(shard).get_tensor("features")
            rows = torch.tensor([self.rows[keys[i]]["row"] for i in positions])
            out[torch.tensor(positions)] = block[rows]
        return out

    def _indexed(self, path: str | os.PathLike) -> dict:
        """The row held in memory (without top-5 classes, but for a legacy store's)."""
        try:
            return self.rows[_key(path)]
        except KeyError:
            raise TexplainError(f"{path}: not in the feature store {self.folder}") from None

    def _add(self, rows: Sequence[dict]) -> None:
        """Index rows of one shard, leaving their top-5 classes on disk and sharing the strings they repeat."""
        for row in rows:
            slim = {k: v for k, v in row.items() if k != TOP5}
            slim["shard"] = sys.intern(row["shard"])
            if "stream" in row:
                slim["stream"] = (sys.intern(row["stream"][0]), row["stream"][1])
            self.rows[row["path"]] = slim

    def _remember(self, shard: str, rows: Sequence[dict]) -> dict[str, dict]:
        """Keep one shard's whole rows for :meth:`row`, forgetting the oldest beyond :data:`CACHED_SHARDS`."""
        if len(self._whole) >= CACHED_SHARDS:
            self._whole.pop(next(iter(self._whole)))
        self._whole[shard] = {r["path"]: r for r in rows}
        return self._whole[shard]

    def _shard(self, shard: int | str):
        if shard not in self._shards:
            self._shards[shard] = open_safetensors(self.folder / _shard_file(shard))
        return self._shards[shard]


def open_store(folder: str | os.PathLike, classifier: Classifier, config: ExtractionConfig | None = None) -> FeatureStore:
    """Open the store in ``folder``, refusing one made by another classifier, layer or dtype; or start one."""
    folder = Path(folder)
    meta = _meta(classifier, config or ExtractionConfig())
    if (folder / META_FILE).is_file():
        store = FeatureStore(folder)
        for key in ("classifier", "feature_layer", "fp16"):
            if key == "classifier" and isinstance(store.meta.get(key), str) and same_name(store.meta[key], meta[key]):
                continue  # one classifier folder, named by another path (relative, absolute, a link)
            if store.meta.get(key) != meta[key]:
                raise TexplainError(
                    f"{folder}: feature store was made with {key}={store.meta.get(key)!r}, not {meta[key]!r}; "
                    "use another folder"
                )
        return store
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / META_FILE, meta)
    return FeatureStore(folder)


def extract_features(
    classifier: Classifier,
    paths: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    config: ExtractionConfig | None = None,
    metadata: Mapping[str, Mapping] | None = None,
    progress: bool = True,
) -> tuple[FeatureStore, list[tuple[str, str]]]:
    """Extract features of the image files ``paths`` into ``folder``; returns the store and the skipped images.

    Images already in the store are not extracted again. A store made by
    another classifier, feature layer or dtype is refused rather than mixed,
    and so is a store another run is extracting into (its lock,
    :mod:`texplain.locking`).
    ``metadata`` maps a path to extra index fields (label, split, group).
    Skipped images are (path, reason) pairs: a bad image never stops the run.
    """
    store = open_store(folder, classifier, config)
    items = (ImageItem(p, (metadata or {}).get(p, {})) for p in dict.fromkeys(_key(p) for p in paths))
    skipped = extract_into(store, classifier, items, config, progress=progress)
    return store, skipped


def extract_into(
    store: FeatureStore,
    classifier: Classifier,
    items: Iterable[ImageItem],
    config: ExtractionConfig | None = None,
    writer: str = "",
    progress: bool = True,
) -> list[tuple[str, str]]:
    """Add the features of ``items`` not yet in ``store`` to it, a shard at a time; returns the skipped (key, reason).

    ``items`` may be a stream too large for memory: it is read a shard's
    worth at a time. ``writer`` names this process's shards when several
    write to one store at once (a training process's rank, an actor's
    token); each writer must have its own. When the stream fails with a
    :class:`~texplain.errors.TexplainError` (a corrupt WebDataset shard), the
    images read before it are still written, then the error goes on. The
    single writer (``writer`` empty) holds the store's lock (:mod:`texplain.locking`)
    while it writes, so a second run into the store stops instead of mixing shards.
    """
    config = config or ExtractionConfig()
    with locked_folder(store.folder) if not writer else contextlib.nullcontext():
        numbers = _shard_numbers(store.folder, writer)
        skipped: list[tuple[str, str]] = []
        pending: dict[str, ImageItem] = {}
        bar = tqdm(desc="features", unit="img", disable=not progress)

        def flush() -> None:  # the pending images leave the queue first: a failed write is not retried
            chunk = list(pending.values())
            pending.clear()
            skipped.extend(_write_chunk(store, classifier, chunk, config, _shard_stem(writer, next(numbers))))
            bar.update(len(chunk))

        try:
            for item in items:
                if item.key not in store.rows:
                    pending.setdefault(item.key, item)
                if len(pending) == config.shard_size:
                    flush()
        except TexplainError:
            if pending:
                flush()
            raise
        else:
            if pending:
                flush()
        finally:
            bar.close()
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    return skipped


def _write_chunk(
    store: FeatureStore, classifier: Classifier, items: Sequence[ImageItem], config: ExtractionConfig, stem: str
) -> list[tuple[str, str]]:
    """Extract one shard's worth of images, write the shard and then its rows; returns the skipped (key, reason)."""
    feats: list[Tensor] = []
    rows: list[dict] = []
    bad: list[tuple[str, str]] = []
    for batch in classify_images(classifier, items, config.batch_size, bad):
        feats.append(batch.features.to("cpu", torch.float16 if config.fp16 else torch.float32))
        rows += [{"path": item.key, TOP5: top, **item.metadata} for item, top in zip(batch.items, batch.top5)]
    if not rows:
        return bad
    block = torch.cat(feats)  # (n, T, D)
    if store.meta.get("token_shape") is None:
        store.meta["token_shape"] = list(block.shape[1:])
        write_json(store.folder / META_FILE, store.meta)
    for i, row in enumerate(rows):
        row.update(shard=stem, row=i)
    _write_shard(store.folder, stem, block)
    write_json(store.folder / f"{stem}{ROWS_SUFFIX}", rows)
    store._add(rows)
    store._remember(stem, rows)
    return bad


@dataclass
class ClassifiedBatch:
    """Images run through the classifier together: the readable items, their features and top-5 classes."""

    items: list[ImageItem]
    features: Tensor  # (B, T, D), on the classifier's device
    top5: list[list[dict]]


def classify_images(
    classifier: Classifier, items: Iterable[ImageItem], batch_size: int, unreadable: list[tuple[str, str]] | None = None
) -> Iterator[ClassifiedBatch]:
    """Read, preprocess (the model's own), take features and top-5 classes: a batch of ``batch_size`` at a time.

    The one way from image files to features: a store, ``texplain explain``
    and ``texplain evaluate`` all read images through it. ``items`` may be a
    stream; an unreadable image goes to ``unreadable`` as (key, reason), never
    stopping the rest.
    """
    for batch in iter_batches(items, batch_size):
        pixels, good = _readable(classifier, batch, unreadable)
        if pixels is None:
            continue
        with torch.inference_mode():
            tokens, logits = classifier.features_and_logits(pixels.to(classifier.device))  # (B, T, D), (B, C)
        yield ClassifiedBatch(good, tokens, top_classes(logits, classifier.class_names))


def readable_pixels(
    classifier: Classifier, paths: Sequence[str], unreadable: list[tuple[str, str]] | None = None
) -> tuple[Tensor | None, list[str]]:
    """Preprocessed pixels (B, 3, H, W) of the readable images among ``paths``, and their paths.

    Unreadable images are appended to ``unreadable`` as (path, reason).
    """
    pixels, good = _readable(classifier, [ImageItem(str(p)) for p in paths], unreadable)
    return pixels, [item.key for item in good]


def _readable(
    classifier: Classifier, items: Sequence[ImageItem], unreadable: list[tuple[str, str]] | None
) -> tuple[Tensor | None, list[ImageItem]]:
    """Preprocessed pixels (B, 3, H, W) of the readable ``items`` and those items; the others go to ``unreadable``."""
    pixels, good = [], []
    for item in items:
        try:
            pixels.append(classifier.preprocess(item.read()))
            good.append(item)
        except BadImageError as exc:
            if unreadable is not None:
                unreadable.append((item.key, str(exc)))
    return (torch.stack(pixels) if pixels else None), good


def top_classes(logits: Tensor, class_names: Sequence[str], k: int = TOP_K) -> list[list[dict]]:
    """Logits (B, C) → for each image the top-k classes as {index, name, prob}."""
    probs = logits.float().softmax(-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [
        [{"index": int(i), "name": class_names[int(i)], "prob": round(float(v), 6)} for v, i in zip(vs, ids)]
        for vs, ids in zip(values, indices)
    ]


def _meta(classifier: Classifier, config: ExtractionConfig) -> dict:
    return {
        "classifier": classifier.spec,
        "feature_layer": classifier.feature_layer,
        "fp16": config.fp16,
        "class_names": classifier.class_names,
        "token_shape": None,
    }


def _shard_numbers(folder: Path, writer: str) -> Iterator[int]:
    """The numbers of ``writer``'s next shards: on from its highest one in ``folder`` (legacy index included)."""
    prefix = f"shard_{writer}_" if writer else "shard_"
    pattern = re.compile(rf"^{re.escape(prefix)}(\d{{5}}){re.escape(ROWS_SUFFIX)}$")
    used = [int(m.group(1)) for f in folder.iterdir() if (m := pattern.match(f.name))]
    if not writer and (folder / INDEX_FILE).is_file():
        used += [row["shard"] for row in load_json(folder / INDEX_FILE)]
    number = 1 + max(used, default=-1)
    while True:
        yield number
        number += 1


def _shard_stem(writer: str, number: int) -> str:
    """``shard_00012``, or ``shard_<writer>_00012`` for one of several writers."""
    return f"shard_{writer}_{number:05d}" if writer else f"shard_{number:05d}"


def _write_shard(folder: Path, stem: str, feats: Tensor) -> None:
    from safetensors.torch import save_file

    with writing(folder / f"{stem}.safetensors") as tmp:
        save_file({"features": feats.contiguous()}, str(tmp))


def _shard_file(shard: int | str) -> str:
    """The file of a row's shard: a stem, or the number of a shard listed in a legacy ``index.json``."""
    return f"{_shard_stem('', shard) if isinstance(shard, int) else shard}.safetensors"


def _key(path: object) -> str:
    return str(path)


def iter_batches(items: Iterable, size: int) -> Iterator[list]:
    """Group any iterable into lists of ``size`` (the last may be shorter)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
