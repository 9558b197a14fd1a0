"""A results folder written by ``explain-dataset``: reading it, and committing rows to it.

A results folder holds:

- ``manifest.json``: the settings the rows were made with (classifier,
  feature layer, translator, LM, sampling, words, class words, prior), the
  committed part files, the images skipped as unreadable, ``complete``;
- ``parts/part-00000.parquet`` …: one row per image (:func:`schema`), one
  file per chunk of images;
- ``features/``: the classifier's features (a :class:`~texplain.models.features.FeatureStore`);
- ``prior.json``: the LM-prior baseline (:mod:`texplain.analysis.lm_prior`), once every
  image is done;
- ``.texplain.lock``: the lock a run holds while it writes (:mod:`texplain.locking`).

A chunk is committed in two atomic steps: its part file is written to a
temporary name and renamed, then the manifest (rewritten the same way) lists
it. A run killed anywhere leaves at most one unlisted part file, which the
next run deletes before redoing that chunk; listed parts are never touched.

This module needs neither torch nor the models, so ``texplain query`` and
``texplain analyse`` on existing results start fast.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from texplain.analysis.lm_prior import LMPrior
from texplain.atomic import write_json, writing
from texplain.errors import TexplainError
from texplain.locking import LOCK_FILE
from texplain.optional import require

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "parts"
PRIOR = "prior.json"
FORMAT = 1


def schema():
    """The Parquet schema of one image's row (pyarrow imported lazily)."""
    pa = _pyarrow()
    return pa.schema([
        ("image", pa.string()),
        ("label", pa.string()),
        ("split", pa.string()),
        ("group", pa.string()),
        ("predicted", pa.string()),
        ("confidence", pa.float64()),
        ("correct", pa.bool_()),
        ("top5", pa.list_(pa.struct([("index", pa.int32()), ("name", pa.string()), ("prob", pa.float64())]))),
        ("n_sentences", pa.int32()),
        ("top_word", pa.string()),
        ("words", pa.list_(pa.struct([("word", pa.string()), ("count", pa.int32())]))),
        ("class_mentions", pa.list_(pa.struct([("name", pa.string()), ("count", pa.int32())]))),
        ("sentences", pa.list_(pa.string())),
    ])


def _pyarrow():
    return require("pyarrow", "Parquet results")


def _parquet():
    return require("pyarrow.parquet", "Parquet results")


class ResultsFolder:
    """A results folder's manifest and part files: what is committed, and committing more."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest

    @classmethod
    def open(cls, folder: str | os.PathLike, settings: dict | None = None, create: bool = False) -> ResultsFolder:
        """Open ``folder`` (checking ``settings`` against its manifest), or start one when ``create``."""
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            if not create:
                raise TexplainError(f"{folder}: not a results folder (no {MANIFEST}); make one with texplain explain-dataset")
            if folder.exists() and any(p.name != LOCK_FILE for p in folder.iterdir()):
                raise TexplainError(f"{folder}: exists and is not a results folder; choose an empty or new folder")
            manifest = {"format": FORMAT, "settings": settings, "parts": [], "skipped": [], "complete": False}
            folder.mkdir(parents=True, exist_ok=True)
            write_json(path, manifest)
            return cls(folder, manifest)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TexplainError(f"{path}: unreadable manifest ({exc})") from exc
        if manifest.get("format") != FORMAT:
            raise TexplainError(f"{path}: results format {manifest.get('format')!r}, this texplain reads {FORMAT}")
        if settings is not None and manifest["settings"] != settings:
            key = next(k for k in settings if manifest["settings"].get(k) != settings[k])
            raise TexplainError(
                f"{folder}: its rows were made with other {key.replace('_', ' ')} settings; resume with the "
                "same settings or write to another --out (nothing was changed)"
            )
        results = cls(folder, manifest)
        if create:
            results._drop_uncommitted()
        return results

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def part_paths(self) -> list[Path]:
        """The committed part files, in order."""
        return [self.folder / part["file"] for part in self.manifest["parts"]]

    def done_images(self) -> list[str]:
        """The ``image`` of every committed row, in order."""
        pq = _parquet()
        return [p for path in self.part_paths() for p in pq.read_table(path, columns=["image"]).column("image").to_pylist()]

    def prior(self) -> LMPrior | None:
        """The LM prior of this folder, or None when it was run without one."""
        path = self.folder / PRIOR
        return LMPrior.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None

    def commit(self, rows: list[dict], skipped: list[tuple[str, str]]) -> None:
        """Write one chunk's part file, then list it in the manifest (both atomically)."""
        pa, pq = _pyarrow(), _parquet()
        number = len(self.manifest["parts"])
        relative = f"{PARTS}/part-{number:05d}.parquet"
        target = self.folder / relative
        with writing(target) as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema()), tmp)
        manifest = dict(self.manifest)
        manifest["parts"] = [*manifest["parts"], {"file": relative, "rows": len(rows)}]
        known = {entry["image"] for entry in manifest["skipped"]}
        manifest["skipped"] = [*manifest["skipped"], *({"image": p, "reason": r} for p, r in skipped if p not in known)]
        write_json(self.folder / MANIFEST, manifest)
        self.manifest = manifest

    def finish(self) -> None:
        """Mark every listed image done."""
        self.manifest = dict(self.manifest, complete=True)
        write_json(self.folder / MANIFEST, self.manifest)

    def table(self, columns: Sequence[str] | None = None):
        """All committed rows as one pyarrow Table (for reports and queries; fits in memory by columns)."""
        pa, pq = _pyarrow(), _parquet()
        parts = [pq.read_table(path, columns=list(columns) if columns else None) for path in self.part_paths()]
        if not parts:
            return schema().empty_table().select(list(columns) if columns else schema().names)
        return pa.concat_tables(parts)

    def iter_rows(self, columns: Sequence[str] | None = None) -> Iterator[dict]:
        """Committed rows one by one, read a part file at a time (memory: one part)."""
        pq = _parquet()
        for path in self.part_paths():
            yield from pq.read_table(path, columns=list(columns) if columns else None).to_pylist()

    def _drop_uncommitted(self) -> None:
        """Delete part files a killed run wrote but never listed, and stray temporaries."""
        listed = set(self.part_paths())
        for path in sorted((self.folder / PARTS).glob("part-*")) if (self.folder / PARTS).is_dir() else []:
            if path not in listed:
                log.info("removing %s, left by an interrupted run", path)
                path.unlink()
        if self.complete:
            self.manifest = dict(self.manifest, complete=False)
            write_json(self.folder / MANIFEST, self.manifest)
