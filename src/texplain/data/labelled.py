"""Labelled image sets: which photo shows which class, in which split and group.

Class-level analysis aggregates explanations over all images of a class and
compares splits; mitigation fine-tunes and reports worst-group accuracy. Both
need a flat list of :class:`LabelledImage`, read here from:

* an image folder with class sub-folders, ``root/<class>/*.jpg``, or with
  split folders above them, ``root/<split>/<class>/*.jpg`` (recognised when
  every top-level folder is named train, test, val, valid, validation or dev);
* BAR's ``metadata.json``, ``{stem: {"file", "cls", "split", "source"}}``
  with files relative to the JSON's folder (a folder holding a
  ``metadata.json`` is read through it);
* a CSV/TSV with a header naming ``path`` and ``label`` (optional ``split``,
  ``group``), or JSON Lines with the same keys; paths relative to the file.

Labelled sets are small enough to check every listed file exists, so a
missing image is an error here rather than a surprise during extraction.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from texplain.data.files import load_json, parse_json, read_text, select_split
from texplain.data.images import image_files, inside
from texplain.errors import TexplainError

SPLIT_FOLDER_NAMES: frozenset[str] = frozenset(
    {"train", "test", "val", "valid", "validation", "dev"}
)
"""Top-level folder names that mark a ``root/<split>/<class>/`` layout (compared in lower case)."""

_PATH_KEYS = ("path", "image", "file", "filepath")
_LABEL_KEYS = ("label", "class", "cls")


@dataclass(frozen=True)
class LabelledImage:
    """One image with its class; ``split`` and ``group`` are ``None`` where the source has none."""

    path: Path
    label: str
    split: str | None = None
    group: str | None = None


def read_labelled(source: str | Path, split: str | None = None, skip: str | Path | None = None) -> list[LabelledImage]:
    """Read a labelled image set from a folder or a listing file, optionally one ``split`` only.

    A folder read as class folders leaves out everything under ``skip`` (a
    command's output folder inside it); a listing lists what it lists.
    """
    source = Path(source)
    if not source.exists():
        raise TexplainError(f"{source}: no such file or folder")
    suffix = source.suffix.lower()
    if source.is_dir() and (source / "metadata.json").is_file():
        items = read_bar_metadata(source / "metadata.json")
    elif source.is_dir():
        items = read_image_folder(source, skip)
    elif suffix == ".json":
        items = read_bar_metadata(source)
    elif suffix in (".csv", ".tsv"):
        items = read_labelled_table(source)
    elif suffix in (".jsonl", ".ndjson"):
        items = read_labelled_jsonl(source)
    else:
        raise TexplainError(
            f"{source}: unknown labelled-set format; supported: a folder of class folders, "
            "BAR metadata.json, .csv/.tsv or .jsonl with path and label"
        )
    return select_split(source, items, split, "no labelled images", "images")


def read_image_folder(root: str | Path, skip: str | Path | None = None) -> list[LabelledImage]:
    """Read ``root/<class>/...`` or ``root/<split>/<class>/...``; labels are folder names.

    Images anywhere below a class folder belong to it. An empty class folder,
    or images lying outside class folders, is an error. Nothing under
    ``skip`` is read: neither a folder of it as a class, nor its images.
    """
    root = Path(root)
    tops = _subfolders(root, skip)
    if not tops:
        raise TexplainError(
            f"{root}: no class sub-folders (expected <root>/<class>/*.jpg or <root>/<split>/<class>/*.jpg)"
        )
    if all(top.name.lower() in SPLIT_FOLDER_NAMES for top in tops):
        return [item for top in tops for item in _class_folders(top, top.name, skip)]
    return _class_folders(root, None, skip)


def read_bar_metadata(path: str | Path) -> list[LabelledImage]:
    """Read BAR's ``{stem: {"file", "cls", "split", "source"}}``, in file order.

    ``file`` (or ``path``) is relative to the JSON's folder; ``cls`` (or
    ``label``) is the class; an optional ``group`` is kept; ``source`` (the
    web site a photo came from) is not a group and is not kept.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise TexplainError(f"{path}: expected a JSON object of {{name: {{file, cls, split}}}}")
    items = []
    for stem, entry in data.items():
        where = f"{path}: entry '{stem}'"
        if not isinstance(entry, dict):
            raise TexplainError(f"{where}: expected an object with file and cls")
        items.append(_item(path.parent, entry, where))
    return items


def read_labelled_table(path: str | Path) -> list[LabelledImage]:
    """Read a CSV (or tab-separated ``.tsv``) with ``path``, ``label`` and optional ``split``, ``group``."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    header: list[str] | None = None
    items = []
    try:
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            where = f"{path}:{reader.line_num}"
            if header is None:
                header = [name.strip().lower() for name in row]
                _require_columns(where, header)
                continue
            if len(row) != len(header):
                raise TexplainError(f"{where}: expected {len(header)} columns, got {len(row)}")
            items.append(_item(path.parent, dict(zip(header, row)), where))
    except csv.Error as err:
        raise TexplainError(f"{path}:{reader.line_num}: bad CSV ({err})") from err
    return items


def read_labelled_jsonl(path: str | Path) -> list[LabelledImage]:
    """Read JSON Lines of ``{"path", "label", "split"?, "group"?}``."""
    path = Path(path)
    items = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        record = parse_json(line, path, number)
        if not isinstance(record, dict):
            raise TexplainError(f"{where}: expected a JSON object, got {type(record).__name__}")
        items.append(_item(path.parent, record, where))
    return items


def class_names(items: Iterable[LabelledImage]) -> list[str]:
    """The sorted distinct labels of ``items``."""
    return sorted({item.label for item in items})


def _subfolders(folder: Path, skip: str | Path | None = None) -> list[Path]:
    """Sorted non-hidden sub-folders of ``folder``, but not ``skip`` itself."""
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and inside(folder, skip) != Path(p.name))


def _class_folders(folder: Path, split: str | None, skip: str | Path | None) -> list[LabelledImage]:
    """Items from ``folder/<class>/...``, every class folder non-empty, no loose images, nothing under ``skip``."""
    classes = _subfolders(folder, skip)
    if not classes:
        raise TexplainError(f"{folder}: no class sub-folders (expected {folder}/<class>/*.jpg)")
    loose = image_files(folder, recursive=False)
    if loose:
        raise TexplainError(
            f"{folder}: {len(loose)} image(s) outside class folders, e.g. {loose[0].name}"
        )
    items = []
    for class_dir in classes:
        files = image_files(class_dir, recursive=True, skip=skip)
        if not files:
            raise TexplainError(f"{class_dir}: empty class (no image files)")
        items.extend(LabelledImage(file, class_dir.name, split) for file in files)
    return items


def _require_columns(where: str, header: list[str]) -> None:
    """Fail unless the header names a path column and a label column."""
    for keys in (_PATH_KEYS, _LABEL_KEYS):
        if not any(key in header for key in keys):
            raise TexplainError(
                f"{where}: header has no {' / '.join(keys)} column (found: {', '.join(header)})"
            )


def _item(base: Path, record: dict[str, Any], where: str) -> LabelledImage:
    """One :class:`LabelledImage` from a record, its path resolved against ``base`` and checked."""
    relative = _text(record, _PATH_KEYS, where, "path")
    label = _text(record, _LABEL_KEYS, where, "label")
    path = base / relative
    if not path.is_file():
        raise TexplainError(f"{where}: {relative}: no such file")
    return LabelledImage(path, label, _optional(record, "split", where), _optional(record, "group", where))


def _text(record: dict[str, Any], keys: tuple[str, ...], where: str, what: str) -> str:
    """The first of ``keys`` in ``record`` as a non-empty string; missing or empty is an error."""
    for key in keys:
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
            raise TexplainError(f"{where}: missing {what} ('{key}' is {value!r})")
        return str(value).strip()
    raise TexplainError(f"{where}: missing {what} (no {' / '.join(keys)})")


def _optional(record: dict[str, Any], key: str, where: str) -> str | None:
    """An optional string field: ``None`` when absent or blank."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise TexplainError(f"{where}: '{key}' must be a string, got {value!r}")
    return str(value).strip() or None


