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
- ``.texplain.lock``: the lock a run holds while it writes (:mod:`texplain.locking`);
- ``.ray/``: the files of a Ray instance ``explain-dataset --engine ray`` started, while it runs
  (:mod:`texplain.analysis.ray_engine`).

A chunk is committed in two atomic steps: its part file is written to a
temporary name and renamed, then the manifest (rewritten the same way) lists
it. A run killed anywhere leaves at most one unlisted part file, which the
next run deletes before redoing that chunk; listed parts are never touched.

A manifest is data: it must have the shape written here, and its parts must
be ``parts/part-NNNNN.parquet`` inside the folder (never ``../other/…``, nor
through a link out of it), or it is refused in one line. A listed part that
is missing, truncated or otherwise unreadable is one line for a reader
(``query``, ``analyse``), and is redone by the next ``explain-dataset`` into
the folder: it is dropped from the manifest, so its images are explained
again.

This module needs neither torch nor the models, so ``texplain query`` and
``texplain analyse`` on existing results start fast.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from texplain.analysis.lm_prior import LMPrior
from texplain.atomic import write_json, writing
from texplain.data.files import load_json
from texplain.errors import TexplainError, first_line
from texplain.locking import LOCK_FILE
from texplain.optional import require

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "parts"
PRIOR = "prior.json"
RAY_FILES = ".ray"
FORMAT = 1
REDO = "run explain-dataset into this folder again with the same settings to redo it"
"""What to do about a damaged part: the next run into the folder explains its images again."""


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
            if folder.exists() and any(p.name not in (LOCK_FILE, RAY_FILES) for p in folder.iterdir()):
                raise TexplainError(f"{folder}: exists and is not a results folder; choose an empty or new folder")
            manifest = {"format": FORMAT, "settings": settings, "parts": [], "skipped": [], "complete": False}
            folder.mkdir(parents=True, exist_ok=True)
            write_json(path, manifest)
            return cls(folder, manifest)
        manifest = _checked_manifest(folder, load_json(path))
        if settings is not None and manifest["settings"] != settings:
            key = next((k for k in settings if (manifest["settings"] or {}).get(k) != settings[k]), "recorded")
            raise TexplainError(
                f"{folder}: its rows were made with other {key.replace('_', ' ')} settings; resume with the "
                "same settings or write to another --out (nothing was changed)"
            )
        results = cls(folder, manifest)
        if create:
            results._drop_damaged()
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
        return [p for path in self.part_paths() for p in _read_part(path, ["image"]).column("image").to_pylist()]

    def prior(self) -> LMPrior | None:
        """The LM prior of this folder, or None when it was run without one."""
        path = self.folder / PRIOR
        if not path.is_file():
            return None
        try:
            return LMPrior.from_dict(load_json(path))
        except TexplainError as exc:
            raise TexplainError(f"{path}: {exc}") from exc

    def commit(self, rows: list[dict], skipped: list[tuple[str, str]]) -> None:
        """Write one chunk's part file, then list it in the manifest (both atomically).

        The part takes the number after the highest listed one, so that no
        listed part is ever overwritten (parts dropped for redoing leave gaps).
        """
        pa, pq = _pyarrow(), _parquet()
        number = 1 + max((_part_number(part["file"]) for part in self.manifest["parts"]), default=-1)
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
        pa = _pyarrow()
        parts = [_read_part(path, columns) for path in self.part_paths()]
        if not parts:
            return schema().empty_table().select(list(columns) if columns else schema().names)
        return pa.concat_tables(parts)

    def iter_rows(self, columns: Sequence[str] | None = None) -> Iterator[dict]:
        """Committed rows one by one, read a part file at a time (memory: one part)."""
        for path in self.part_paths():
            yield from _read_part(path, columns).to_pylist()

    def check_parts(self) -> None:
        """Raise the one-line error of the first listed part that cannot be read back whole (see :func:`_read_part`)."""
        for part in self.manifest["parts"]:
            problem = _part_problem(self.folder / part["file"], part["rows"])
            if problem:
                raise TexplainError(f"{self.folder / part['file']}: a damaged results part ({problem}); {REDO}")

    def _drop_damaged(self) -> None:
        """Unlist every part that is missing or unreadable, so that its images are explained again."""
        keep = []
        for part in self.manifest["parts"]:
            problem = _part_problem(self.folder / part["file"], part["rows"])
            if problem:
                log.warning("%s: %s; its images are explained again", self.folder / part["file"], problem)
            else:
                keep.append(part)
        if len(keep) < len(self.manifest["parts"]):
            self.manifest = dict(self.manifest, parts=keep)
            write_json(self.folder / MANIFEST, self.manifest)

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


PART_FILE = re.compile(rf"{PARTS}/part-(\d{{5,}})\.parquet")
"""How a part is listed in a manifest: ``parts/part-00000.parquet``, the form :meth:`ResultsFolder.commit` writes."""


def _part_number(file: str) -> int:
    """The number NNNNN of a listed part ``parts/part-NNNNN.parquet``."""
    return int(PART_FILE.fullmatch(file).group(1))


def _checked_manifest(folder: Path, manifest: object) -> dict:
    """``manifest`` if it has the shape :meth:`ResultsFolder.open` writes and its parts lie inside ``folder``."""
    path = folder / MANIFEST
    if not isinstance(manifest, dict):
        raise TexplainError(f"{path}: not a results manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != FORMAT:
        raise TexplainError(f"{path}: results format {manifest.get('format')!r}, this texplain reads {FORMAT}")
    parts, skipped = manifest.get("parts"), manifest.get("skipped")
    problem = (
        "settings is not an object" if not isinstance(manifest.get("settings"), (dict, type(None))) else
        "complete is not true or false" if not isinstance(manifest.get("complete"), bool) else
        "parts is not a list of {file, rows}" if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("file"), str) and type(p.get("rows")) is int for p in parts) else
        "skipped is not a list of {image, reason}" if not isinstance(skipped, list) or not all(
            isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("reason"), str)
            for e in skipped) else ""
    )
    if problem:
        raise TexplainError(f"{path}: a damaged results manifest ({problem})")
    inside = folder.resolve()
    for part in parts:
        if not PART_FILE.fullmatch(part["file"]) or not (folder / part["file"]).resolve().is_relative_to(inside):
            raise TexplainError(f"{path}: lists the part {part['file']!r}, which is not a part file of this folder "
                                f"({PARTS}/part-NNNNN.parquet inside it)")
    if len({part["file"] for part in parts}) < len(parts):
        raise TexplainError(f"{path}: a damaged results manifest (a part listed twice)")
    return manifest


def _read_part(path: Path, columns: Sequence[str] | None = None):
    """One part file's rows (``columns`` of them), or a one-line error saying how to redo a damaged part."""
    pa, pq = _pyarrow(), _parquet()
    try:
        return pq.read_table(path, columns=list(columns) if columns else None, schema=schema())
    except (OSError, pa.ArrowException) as exc:
        raise TexplainError(f"{path}: a damaged results part ({first_line(exc)}); {REDO}") from exc


def _part_problem(path: Path, rows: int) -> str:
    """Why the part file ``path`` listed with ``rows`` rows cannot be read back whole, or ``""``."""
    pa, pq = _pyarrow(), _parquet()
    try:
        if not pq.read_schema(path).equals(schema()):
            return "its columns are not the results schema"
        found = pq.read_table(path, schema=schema()).num_rows
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable ({first_line(exc)})"
    return "" if found == rows else f"{found} rows where the manifest lists {rows}"
