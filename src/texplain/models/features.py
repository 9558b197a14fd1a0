"""Extract a frozen classifier's features once and keep them on disk.

A feature store is a folder:

- ``meta.json``: classifier spec, feature layer, token shape (T, D), dtype,
  class names: what a translator checkpoint is checked against;
- ``shard_00000.safetensors`` …: ``features`` (n, T, D) for up to
  ``shard_size`` images each;
- ``index.json``: one row per image: path, shard, row, the classifier's
  top-5 classes with probabilities, and any metadata given (label, split…).

Shards are written whole to a temporary name and renamed, and the index is
rewritten the same way after each shard, so a killed extraction keeps every
finished shard and a second run only extracts what is missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from texplain.atomic import write_json, writing
from texplain.data.files import load_json
from texplain.data.images import load_rgb
from texplain.errors import BadImageError, TexplainError
from texplain.locking import locked_folder
from texplain.models.classifiers import Classifier
from texplain.weights import open_safetensors

log = logging.getLogger(__name__)

META_FILE = "meta.json"
INDEX_FILE = "index.json"
TOP_K = 5


@dataclass
class ExtractionConfig:
    """How features are extracted.

    batch_size: images per forward pass. fp16: store features as float16
    (half the disk, enough precision for a translator's input).
    shard_size: images per safetensors shard.
    """

    batch_size: int = 32
    fp16: bool = False
    shard_size: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise TexplainError("feature extraction: batch_size and shard_size must be at least 1")


class FeatureStore:
    """Read access to a feature folder: ``features(paths)`` → (B, T, D) float32."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.is_file():
            raise TexplainError(f"{self.folder}: not a feature store (no {META_FILE})")
        self.meta: dict = load_json(meta_path)
        index_path = self.folder / INDEX_FILE
        rows = load_json(index_path) if index_path.is_file() else []
        self.rows: dict[str, dict] = {row["path"]: row for row in rows}
        self._shards: dict[int, object] = {}

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

    def row(self, path: str | os.PathLike) -> dict:
        """The index row of one image (top-5 classes and metadata)."""
        try:
            return self.rows[_key(path)]
        except KeyError:
            raise TexplainError(f"{path}: not in the feature store {self.folder}") from None

    def features(self, paths: Sequence[str | os.PathLike]) -> Tensor:
        """Features of the given images, (B, T, D) float32, read from memory-mapped shards."""
        rows = [self.row(p) for p in paths]
        out = [self._shard(r["shard"]).get_slice("features")[r["row"] : r["row"] + 1] for r in rows]
        return torch.cat(out).float()

    def load_all(self, paths: Sequence[str | os.PathLike]) -> Tensor:
        """Like :meth:`features` but reads each shard once: the fast path for a training set."""
        keys = [_key(p) for p in paths]
        by_shard: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_shard.setdefault(self.row(k)["shard"], []).append(i)
        shape = self.token_shape
        out = torch.empty((len(keys), *shape), dtype=torch.float16 if self.meta["fp16"] else torch.float32)
        for shard, positions in by_shard.items():
            block = self._shard(shard).get_tensor("features")
            rows = torch.tensor([self.rows[keys[i]]["row"] for i in positions])
            out[torch.tensor(positions)] = block[rows]
        return out

    def _shard(self, number: int):
        if number not in self._shards:
            self._shards[number] = open_safetensors(self.folder / _shard_name(number))
        return self._shards[number]


def extract_features(
    classifier: Classifier,
    paths: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    config: ExtractionConfig | None = None,
    metadata: Mapping[str, Mapping] | None = None,
    progress: bool = True,
) -> tuple[FeatureStore, list[tuple[str, str]]]:
    """Extract features of ``paths`` into ``folder``; returns the store and the skipped images.

    Images already in the store are not extracted again. A store made by
    another classifier, feature layer or dtype is refused rather than mixed,
    and so is a store another run is extracting into (its lock,
    :mod:`texplain.locking`).
    ``metadata`` maps a path to extra index fields (label, split, group).
    Skipped images are (path, reason) pairs: a bad image never stops the run.
    """
    config = config or ExtractionConfig()
    folder = Path(folder)
    meta = _meta(classifier, config)
    skipped: list[tuple[str, str]] = []
    with locked_folder(folder):
        store = _open_or_create(folder, meta)
        todo = [p for p in dict.fromkeys(_key(p) for p in paths) if p not in store.rows]
        next_shard = 1 + max((r["shard"] for r in store.rows.values()), default=-1)
        bar = tqdm(total=len(todo), desc="features", unit="img", disable=not progress)
        for chunk in iter_batches(todo, config.shard_size):
            feats, rows, bad = _extract_chunk(classifier, chunk, config, bar)
            skipped += bad
            if rows:
                if store.meta.get("token_shape") is None:
                    store.meta["token_shape"] = list(feats.shape[1:])
                    write_json(folder / META_FILE, store.meta)
                _write_shard(folder, next_shard, feats)
                for i, row in enumerate(rows):
                    row.update(shard=next_shard, row=i, **(metadata or {}).get(row["path"], {}))
                    store.rows[row["path"]] = row
                write_json(folder / INDEX_FILE, list(store.rows.values()))
                next_shard += 1
        bar.close()
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    return FeatureStore(folder), skipped


def _extract_chunk(
    classifier: Classifier, paths: Sequence[str], config: ExtractionConfig, bar: tqdm
) -> tuple[Tensor, list[dict], list[tuple[str, str]]]:
    """Features (n, T, D) and index rows of one shard's worth of images."""
    feats: list[Tensor] = []
    rows: list[dict] = []
    bad: list[tuple[str, str]] = []
    for batch in iter_batches(paths, config.batch_size):
        pixels, good = readable_pixels(classifier, batch, bad)
        bar.update(len(batch))
        if pixels is None:
            continue
        x = pixels.to(classifier.device)  # (B, 3, H, W)
        with torch.inference_mode():
            tokens, logits = classifier.features_and_logits(x)  # (B, T, D), (B, C)
        feats.append(tokens.to("cpu", torch.float16 if config.fp16 else torch.float32))
        rows += [{"path": p, "top5": top} for p, top in zip(good, top_classes(logits, classifier.class_names))]
    return (torch.cat(feats) if feats else torch.empty(0)), rows, bad


def readable_pixels(
    classifier: Classifier, paths: Sequence[str], unreadable: list[tuple[str, str]] | None = None
) -> tuple[Tensor | None, list[str]]:
    """Preprocessed pixels (B, 3, H, W) of the readable images among ``paths``, and their paths.

    Unreadable images are appended to ``unreadable`` as (path, reason).
    """
    pixels, good = [], []
    for path in paths:
        try:
            pixels.append(classifier.preprocess(load_rgb(path)))
            good.append(path)
        except BadImageError as exc:
            if unreadable is not None:
                unreadable.append((path, str(exc)))
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


def _open_or_create(folder: Path, meta: dict) -> FeatureStore:
    """Open an existing store after checking it was made the same way, or start one."""
    if (folder / META_FILE).is_file():
        store = FeatureStore(folder)
        for key in ("classifier", "feature_layer", "fp16"):
            if store.meta.get(key) != meta[key]:
                raise TexplainError(
                    f"{folder}: feature store was made with {key}={store.meta.get(key)!r}, not {meta[key]!r}; "
                    "use another folder"
                )
        return store
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / META_FILE, meta)
    return FeatureStore(folder)


def _write_shard(folder: Path, number: int, feats: Tensor) -> None:
    from safetensors.torch import save_file

    with writing(folder / _shard_name(number)) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp))


def _shard_name(number: int) -> str:
    return f"shard_{number:05d}.safetensors"


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
