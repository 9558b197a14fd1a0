"""(image, caption) pairs for training the translator, read from the usual caption files.

The translator learns from photographs with human sentences. Those come in a
handful of layouts, all read here into one flat list of :class:`CaptionPair`:

* a table with a header naming ``image`` and ``caption`` (optional ``split``):
  the shared Flickr8k ``captions.tsv`` (``image<TAB>split<TAB>caption``) or any
  ``.tsv``/``.csv``;
* the original Flickr8k ``Flickr8k.token.txt`` (``<image>#<n><TAB><caption>``),
  with splits from the ``Flickr_8k.{train,dev,test}Images.txt`` lists beside it;
* a COCO captions JSON (``captions_train2017.json``) or a Karpathy split JSON
  (``dataset_coco.json``, ``dataset_flickr8k.json``);
* JSON Lines, one ``{"image", "caption", "split"?}`` object a line.

Image names are joined onto an images folder: the one given, else the first
of a few conventional folders beside the file that holds the first image.
Images are not checked at read time (a COCO set has 600k captions); call
:func:`missing_images` for that. Every malformed row is a
:class:`~texplain.errors.TexplainError` naming ``<file>:<line>`` (or the JSON
entry) and the problem.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from texplain.data.files import load_json, parse_json, read_text, select_split
from texplain.errors import TexplainError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS: tuple[str, ...] = (
    "Flickr8k captions.tsv / any .tsv with image and caption columns",
    "Flickr8k.token.txt (<image>#<n><TAB><caption>)",
    "COCO captions .json (images + annotations)",
    "Karpathy split .json (dataset_*.json)",
    ".jsonl ({image, caption, split?} per line)",
    ".csv with image and caption columns",
)
"""Human-readable names of the layouts :func:`read_captions` recognises."""

_IMAGE_COLUMNS = ("image", "file_name", "filename", "filepath")
_CAPTION_COLUMNS = ("caption", "text", "title")
_TOKEN_LINE = re.compile(r"^[^\t]+#\d+\t")
_SPLIT_IN_NAME = re.compile(r"(?:^|[_.\-])(train|val|valid|test|dev)(?:\d{4})?(?:$|[_.\-])")
_FLICKR_SPLITS = ("train", "dev", "test")


@dataclass(frozen=True, slots=True)
class CaptionPair:
    """One human caption of one image; ``split`` is ``None`` when the source has none.

    ``image`` is a file, or the key in a feature store of an image streamed
    from a caption set's shards (:mod:`texplain.data.caption_shards`): millions
    of pairs, each small.
    """

    image: Path | str
    caption: str
    split: str | None = None


def read_captions(
    path: str | Path, images_dir: str | Path | None = None, split: str | None = None
) -> list[CaptionPair]:
    """Read any supported caption file, optionally keeping only one ``split``.

    The layout is chosen from the file's name, suffix and first line. A
    folder is searched for ``captions.tsv`` or ``Flickr8k.token.txt``.
    """
    path = _existing_file(Path(path))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        pairs = read_jsonl_captions(path, images_dir)
    elif suffix == ".json":
        pairs = _json_pairs(path, load_json(path), images_dir)
    elif suffix == ".csv":
        pairs = read_csv_captions(path, images_dir)
    elif suffix == ".tsv":
        pairs = read_tsv_captions(path, images_dir)
    elif suffix in (".txt", ".token"):
        pairs = _text_pairs(path, images_dir)
    else:
        raise _unknown_format(path)
    return select_split(path, pairs, split, "no captions in the file", "captions")


def read_caption_pairs(
    files: Sequence[str | Path], split: str | None, limit: int | None = None, missing_ok: bool = False
) -> list[CaptionPair]:
    """The pairs of one split from several caption files (a mix), perhaps of the first ``limit`` images only.

    With ``missing_ok``, files without that split give no pairs (logged)
    instead of an error: a dev split is welcome, not required.
    """
    pairs = []
    for path in files:
        try:
            pairs += read_captions(path, split=split)
        except TexplainError as exc:
            if not missing_ok:
                raise
            log.info("no %s pairs: %s", split, exc)
    if limit is not None:
        keep = set(list(dict.fromkeys(p.image for p in pairs))[:limit])
        pairs = [p for p in pairs if p.image in keep]
    return pairs


def caption_groups(pairs: Iterable[CaptionPair]) -> list[list[str]]:
    """The captions of each image, in the order images first appear: what a prefix-ready LM learns from."""
    groups: dict[Path, list[str]] = {}
    for pair in pairs:
        groups.setdefault(pair.image, []).append(pair.caption)
    return list(groups.values())


def read_tsv_captions(path: str | Path, images_dir: str | Path | None = None) -> list[CaptionPair]:
    """Read a tab-separated table whose header names ``image`` and ``caption`` (and maybe ``split``).

    Fields are split on tabs only, never unquoted: Flickr captions contain
    ``"`` characters. Images default to ``images/`` beside the file.
    """
    path = Path(path)
    lines = _read_lines(path)
    rows = [(number, line.split("\t")) for number, line in lines]
    return _table_pairs(path, rows, images_dir)


def read_csv_captions(path: str | Path, images_dir: str | Path | None = None) -> list[CaptionPair]:
    """Read a comma-separated table (standard CSV quoting) with ``image`` and ``caption`` columns."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    rows = []
    try:
        for row in reader:
            if row and any(field.strip() for field in row):
                rows.append((reader.line_num, row))
    except csv.Error as err:
        raise TexplainError(f"{path}:{reader.line_num}: bad CSV ({err})") from err
    return _table_pairs(path, rows, images_dir)


def read_flickr_token(path: str | Path, images_dir: str | Path | None = None) -> list[CaptionPair]:
    """Read the original ``Flickr8k.token.txt`` (also Flickr30k's ``results_*.token``).

    Splits come from ``*.trainImages.txt``, ``*.devImages.txt`` and
    ``*.testImages.txt`` beside the file (``None`` where an image is in none
    of them). Images default to ``Flicker8k_Dataset/`` (the archive's own
    spelling), ``Flickr8k_Dataset/`` or ``images/``, beside the file or one
    folder up.
    """
    path = Path(path)
    splits = _flickr_split_lists(path.parent)
    entries: list[tuple[str, str]] = []
    for number, line in _read_lines(path):
        fields = line.split("\t")
        if len(fields) != 2 or "#" not in fields[0]:
            raise TexplainError(
                f"{path}:{number}: expected '<image>#<n><TAB><caption>', got {len(fields)} field(s)"
            )
        name = fields[0].rpartition("#")[0].strip()
        if not name:
            raise TexplainError(f"{path}:{number}: empty image name")
        entries.append((name, _caption(fields[1], f"{path}:{number}")))
    folders = [sub / name for sub in (path.parent, path.parent.parent)
               for name in ("Flicker8k_Dataset", "Flickr8k_Dataset", "images")]
    base = _images_base(path, images_dir, folders, entries)
    return [CaptionPair(base / name, caption, splits.get(name)) for name, caption in entries]


def read_coco_captions(
    path: str | Path, images_dir: str | Path | None = None, split: str | None = None
) -> list[CaptionPair]:
    """Read a COCO captions JSON; every pair gets ``split`` or the split in the file name.

    ``captions_train2017.json`` gives split ``"train"`` and images in
    ``train2017/`` beside the file or beside its ``annotations/`` folder.
    """
    path = Path(path)
    return _coco_pairs(path, load_json(path), images_dir, split)


def read_jsonl_captions(path: str | Path, images_dir: str | Path | None = None) -> list[CaptionPair]:
    """Read JSON Lines with ``image``, ``caption`` and optional ``split`` per line.

    Image paths are relative to the file's folder (or its ``images/``) unless absolute.
    """
    path = Path(path)
    entries: list[tuple[str, str, str | None]] = []
    for number, line in _read_lines(path):
        where = f"{path}:{number}"
        record = parse_json(line, path, number)
        if not isinstance(record, dict):
            raise TexplainError(f"{where}: expected a JSON object, got {type(record).__name__}")
        image = _field(record, _IMAGE_COLUMNS, where)
        caption = _caption(_field(record, _CAPTION_COLUMNS, where), where)
        split = record.get("split")
        if split is not None and not isinstance(split, str):
            raise TexplainError(f"{where}: 'split' must be a string, got {split!r}")
        entries.append((image, caption, split or None))
    base = _images_base(path, images_dir, [path.parent, path.parent / "images"], entries)
    return [CaptionPair(base / image, caption, split) for image, caption, split in entries]


def missing_images(pairs: Iterable[CaptionPair]) -> list[Path]:
    """The distinct image paths of ``pairs`` that are not files, in first-seen order."""
    seen: dict[Path, None] = dict.fromkeys(pair.image for pair in pairs)
    return [image for image in seen if not image.is_file()]


def _existing_file(path: Path) -> Path:
    """``path`` itself, or the known caption file inside a folder; a missing path is an error."""
    if not path.exists():
        raise TexplainError(f"{path}: no such file")
    if not path.is_dir():
        return path
    for name in ("captions.tsv", "Flickr8k.token.txt", "Flickr8k_text/Flickr8k.token.txt"):
        if (path / name).is_file():
            return path / name
    raise TexplainError(f"{path}: is a folder with no captions.tsv or Flickr8k.token.txt in it")


def _unknown_format(path: Path) -> TexplainError:
    """The error for a file in no supported layout, listing the layouts."""
    return TexplainError(
        f"{path}: unknown caption format; supported: {'; '.join(SUPPORTED_FORMATS)}"
    )


def _text_pairs(path: Path, images_dir: str | Path | None) -> list[CaptionPair]:
    """Dispatch a ``.txt``/``.token`` file on its first line: a Flickr token file or a TSV table."""
    lines = _read_lines(path)
    first = lines[0][1] if lines else ""
    if _TOKEN_LINE.match(first):
        return read_flickr_token(path, images_dir)
    header = [name.strip().lower() for name in first.split("\t")]
    if any(name in header for name in _IMAGE_COLUMNS) and any(
        name in header for name in _CAPTION_COLUMNS
    ):
        return read_tsv_captions(path, images_dir)
    raise _unknown_format(path)


def _json_pairs(path: Path, data: Any, images_dir: str | Path | None) -> list[CaptionPair]:
    """Dispatch a parsed JSON document on its shape: COCO (has annotations) or Karpathy (sentences)."""
    if isinstance(data, dict) and "annotations" in data:
        return _coco_pairs(path, data, images_dir, None)
    images = data.get("images") if isinstance(data, dict) else None
    if isinstance(images, list) and images and isinstance(images[0], dict) and "sentences" in images[0]:
        return _karpathy_pairs(path, data, images_dir)
    raise _unknown_format(path)


def _coco_pairs(
    path: Path, data: Any, images_dir: str | Path | None, split: str | None
) -> list[CaptionPair]:
    """Join COCO ``annotations`` to ``images`` by id, in annotation order."""
    images = _json_list(path, data, "images")
    annotations = _json_list(path, data, "annotations")
    names: dict[Any, str] = {}
    for index, entry in enumerate(images):
        where = f"{path}: images[{index}]"
        if not isinstance(entry, dict) or "id" not in entry:
            raise TexplainError(f"{where}: missing 'id'")
        if isinstance(entry["id"], (list, dict)):
            raise TexplainError(f"{where}: 'id' must be a number or a string, got {entry['id']!r}")
        names[entry["id"]] = _field(entry, ("file_name",), where)
    entries: list[tuple[str, str]] = []
    for index, entry in enumerate(annotations):
        where = f"{path}: annotations[{index}]"
        if not isinstance(entry, dict) or "image_id" not in entry:
            raise TexplainError(f"{where}: missing 'image_id'")
        if isinstance(entry["image_id"], (list, dict)) or entry["image_id"] not in names:
            raise TexplainError(f"{where}: unknown image_id {entry['image_id']!r}")
        entries.append((names[entry["image_id"]], _caption(_field(entry, ("caption",), where), where)))
    stem = path.stem.lower()
    tag = stem.split("_", 1)[1] if stem.startswith("captions_") else stem
    folders = [path.parent.parent / tag, path.parent / tag, path.parent / "images", path.parent]
    base = _images_base(path, images_dir, folders, entries)
    label = split if split is not None else _split_from_name(path)
    return [CaptionPair(base / name, caption, label) for name, caption in entries]


def _karpathy_pairs(path: Path, data: Any, images_dir: str | Path | None) -> list[CaptionPair]:
    """Flatten Karpathy ``images[i].sentences[j].raw`` into pairs, keeping each image's split."""
    entries: list[tuple[str, str, str | None]] = []
    for index, entry in enumerate(_json_list(path, data, "images")):
        where = f"{path}: images[{index}]"
        if not isinstance(entry, dict):
            raise TexplainError(f"{where}: expected an object")
        name = _field(entry, ("filename", "file_name"), where)
        folder = entry.get("filepath")
        image = f"{folder}/{name}" if isinstance(folder, str) and folder else name
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise TexplainError(f"{where}: missing 'sentences' list")
        for number, sentence in enumerate(sentences):
            place = f"{where}.sentences[{number}]"
            if not isinstance(sentence, dict):
                raise TexplainError(f"{place}: expected an object")
            entries.append((image, _caption(_field(sentence, ("raw",), place), place), entry.get("split")))
    folders = [path.parent, path.parent / "images", path.parent.parent / "images"]
    base = _images_base(path, images_dir, folders, entries)
    return [CaptionPair(base / image, caption, split) for image, caption, split in entries]


def _table_pairs(
    path: Path, rows: Sequence[tuple[int, list[str]]], images_dir: str | Path | None
) -> list[CaptionPair]:
    """Turn ``(line number, fields)`` rows, the first a header, into pairs."""
    if not rows:
        raise TexplainError(f"{path}: empty file, expected a header naming image and caption columns")
    header_line, header = rows[0]
    names = [name.strip().lower() for name in header]
    image_col = _column(path, header_line, names, _IMAGE_COLUMNS, required=True)
    caption_col = _column(path, header_line, names, _CAPTION_COLUMNS, required=True)
    split_col = _column(path, header_line, names, ("split",), required=False)
    entries: list[tuple[str, str, str | None]] = []
    for number, fields in rows[1:]:
        where = f"{path}:{number}"
        if len(fields) != len(names):
            raise TexplainError(f"{where}: expected {len(names)} columns, got {len(fields)}")
        image = fields[image_col].strip()
        if not image:
            raise TexplainError(f"{where}: empty image name")
        split = fields[split_col].strip() if split_col is not None else ""
        entries.append((image, _caption(fields[caption_col], where), split or None))
    base = _images_base(path, images_dir, [path.parent, path.parent / "images"], entries)
    return [CaptionPair(base / image, caption, split) for image, caption, split in entries]


def _column(
    path: Path, line: int, names: list[str], choices: tuple[str, ...], required: bool
) -> int | None:
    """Index of the first header name among ``choices``; missing and required is an error."""
    for choice in choices:
        if choice in names:
            return names.index(choice)
    if required:
        raise TexplainError(
            f"{path}:{line}: header has no {' / '.join(choices)} column (found: {', '.join(names)})"
        )
    return None


def _field(record: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    """The first of ``keys`` present in ``record``, which must be a non-empty string."""
    for key in keys:
        if key in record:
            value = record[key]
            if not isinstance(value, str) or not value.strip():
                raise TexplainError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
            return value.strip()
    raise TexplainError(f"{where}: missing '{keys[0]}'")


def _caption(text: str, where: str) -> str:
    """A caption with surrounding white space removed; an empty one is an error."""
    caption = text.strip()
    if not caption:
        raise TexplainError(f"{where}: empty caption")
    return caption


def _images_base(
    path: Path,
    images_dir: str | Path | None,
    candidates: Sequence[Path],
    entries: Sequence[tuple[str, ...]],
) -> Path:
    """The folder to join image names onto.

    ``images_dir`` when given; otherwise the first candidate holding the
    first entry's image, else the first candidate that is a folder, else the
    caption file's folder. One look-up, not one per image.
    """
    if images_dir is not None:
        return Path(images_dir)
    if entries:
        first = entries[0][0]
        for folder in candidates:
            if (folder / first).is_file():
                return folder
    return next((folder for folder in candidates if folder.is_dir()), path.parent)


def _flickr_split_lists(folder: Path) -> dict[str, str]:
    """Image name -> split from ``*.{train,dev,test}Images.txt`` in ``folder`` (empty if none)."""
    splits: dict[str, str] = {}
    for split in _FLICKR_SPLITS:
        for listing in sorted(folder.glob(f"*.{split}Images.txt")):
            for number, line in _read_lines(listing):
                name = line.strip()
                if splits.get(name, split) != split:
                    raise TexplainError(
                        f"{listing}:{number}: {name} is already in split '{splits[name]}'"
                    )
                splits[name] = split
    return splits


def _split_from_name(path: Path) -> str | None:
    """``"train"`` for ``captions_train2017.json``; ``None`` when the name names no split."""
    match = _SPLIT_IN_NAME.search(path.stem.lower())
    return match.group(1) if match else None


def _json_list(path: Path, data: Any, key: str) -> list[Any]:
    """``data[key]``, which must be a list."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise TexplainError(f"{path}: expected a top-level '{key}' list")
    return value


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers, line ends stripped."""
    lines = read_text(path).split("\n")
    return [(number, line.rstrip("\r")) for number, line in enumerate(lines, 1) if line.strip()]
