"""Caption sets too large for memory, read as a stream of shards: WebDataset tars and Hugging Face datasets on disk.

CC3M, CC12M and LAION come as millions of (image, caption) samples packed in
shards; they are read here one sample at a time, never whole:

* **WebDataset**: tar files whose members are grouped by key,
  ``<key>.jpg`` (or png, webp…) with ``<key>.txt`` (the caption) and/or
  ``<key>.json`` (``{"caption": …}`` or ``{"captions": […]}``): what
  img2dataset writes. Named as a ``.tar`` file, a folder of them, or a brace
  pattern ``cc12m/{00000..01242}.tar`` (anything the ``webdataset`` package
  opens: local paths, ``http://``, ``pipe:aws s3 cp … -``).
* **Hugging Face datasets on disk**: a folder of Parquet files (the Hub's
  layout, ``Dataset.to_parquet``) or of Arrow files (``save_to_disk``), with
  an image column (``{"bytes", "path"}``, as the ``Image`` feature stores it)
  and a caption column (``caption``, ``text``, ``sentences``…, a string or a
  list of strings). With a split asked for, only the files whose path names
  it (``train-00000-of-00004.parquet``, ``train/``) are read.

Every sample is a :class:`CaptionSample` whose key, ``<shard>/<sample key>``,
names it in a feature store. A sample without an image or a caption is
skipped and logged; a shard that cannot be read (a truncated tar) is a
:class:`~texplain.errors.TexplainError` naming it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from texplain.errors import TexplainError
from texplain.optional import require

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
"""WebDataset member suffixes read as the sample's image, in this order of preference."""
IMAGE_COLUMNS = ("image", "jpg", "png", "img")
CAPTION_COLUMNS = ("caption", "captions", "text", "txt", "sentences", "title")
HF_SUFFIXES = (".parquet", ".arrow")
_SPLIT = re.compile(r"(?:^|[/_.\-])(train|validation|valid|val|test|dev)(?:$|[/_.\-])")


@dataclass(frozen=True)
class CaptionSample:
    """One streamed image: its key, the encoded image, its captions, and its place (shard, position) in the set."""

    key: str
    image: bytes
    captions: tuple[str, ...]
    shard: str
    position: int


@dataclass(frozen=True)
class CaptionShards:
    """A streamed caption set: its kind (``webdataset``, ``parquet`` or ``arrow``) and shards, in order.

    ``limit``: only the set's first ``limit`` samples (quick runs).
    """

    spec: str
    kind: str
    shards: tuple[str, ...]
    limit: int | None = None

    def samples(self, rank: int = 0, world: int = 1) -> Iterator[CaptionSample]:
        """This process's share of the samples: every ``world``-th shard from ``rank`` (with a limit, every sample)."""
        if self.limit is None:
            for number in range(rank, len(self.shards), world):
                yield from self._read(self.shards[number])
            return
        seen = 0
        for shard in self.shards:
            for sample in self._read(shard):
                if seen == self.limit:
                    return
                if seen % world == rank:
                    yield sample
                seen += 1

    def order(self) -> Mapping[str, int]:
        """Shard name → its number in the set: sorts the set's samples found in a store."""
        return {shard: number for number, shard in enumerate(self.shards)}

    def _read(self, shard: str) -> Iterator[CaptionSample]:
        reader = _read_tar if self.kind == "webdataset" else _read_table
        for sample in reader(shard, self.kind):
            if not sample.image or not sample.captions:
                log.warning("skipped %s: %s", sample.key, "no image" if not sample.image else "no caption")
                continue
            yield sample


def is_caption_shards(spec: str | os.PathLike) -> bool:
    """Whether ``spec`` names a streamed set (tars, a brace pattern, Parquet or Arrow files) rather than a caption file."""
    text = str(spec)
    path = Path(text)
    if _names_tars(text) or text.endswith(HF_SUFFIXES):
        return True
    if path.is_dir():
        return any(path.glob("*.tar")) or bool(_table_files(path))
    return False


def open_caption_shards(spec: str | os.PathLike, split: str | None = None, limit: int | None = None) -> CaptionShards:
    """The streamed set ``spec`` names; see the module docstring for what it may be."""
    text = str(spec)
    path = Path(text)
    if _names_tars(text) or (path.is_dir() and any(path.glob("*.tar"))):
        shards = _tar_urls(text)
        kind = "webdataset"
    else:
        files = [path] if path.is_file() else _table_files(path)
        if not files:
            raise TexplainError(f"{spec}: no such Parquet or Arrow file, nor a folder of them")
        shards = [str(f.resolve()) for f in _of_split(text, files, split)]
        kind = "arrow" if shards[0].endswith(".arrow") else "parquet"
    return CaptionShards(text, kind, tuple(shards), limit)


def _names_tars(text: str) -> bool:
    """A ``.tar`` file, a brace pattern of them, or a URL webdataset opens (``pipe:``, ``http://``…)."""
    return ".tar" in text and (text.endswith(".tar") or "{" in text or re.match(r"^[a-z][a-z0-9+.-]*:", text) is not None)


def _tar_urls(spec: str) -> list[str]:
    """The tar shards of a file, a folder or a brace pattern; local ones as absolute paths, each checked to exist."""
    path = Path(spec)
    if path.is_dir():
        return [str(p.resolve()) for p in sorted(path.glob("*.tar"))]
    wds = require("webdataset", "reading WebDataset shards", "distributed")
    urls = wds.shardlists.expand_urls(spec)
    local = [u for u in urls if ":" not in u.split("/")[0]]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise TexplainError(f"{missing[0]}: no such WebDataset shard ({len(missing)} of {len(urls)} missing)")
    return [str(Path(u).resolve()) if u in local else u for u in urls]


def _read_tar(url: str, kind: str) -> Iterator[CaptionSample]:
    """The samples of one tar shard, in order; an unreadable shard is an error that names it."""
    wds = require("webdataset", "reading WebDataset shards", "distributed")
    position = 0
    if _cut_short(url):
        raise TexplainError(f"{url}: unreadable WebDataset shard (cut short: no end-of-archive marker); "
                            "remove or repair it and run again (features read so far are kept)")
    try:
        for record in wds.tariterators.tarfile_samples([{"url": url}]):
            yield CaptionSample(_sample_key(url, record["__key__"]), _tar_image(record), _tar_captions(record),
                                url, position)
            position += 1
    except TexplainError:
        raise
    except Exception as exc:  # tarfile, gzip and the opener raise many kinds
        raise TexplainError(f"{url}: unreadable WebDataset shard after {position} samples ({_reason(exc)}); "
                            "remove or repair it and run again (features read so far are kept)") from exc


def _cut_short(url: str) -> bool:
    """Whether a local tar lacks the zero blocks that end every complete archive.

    Python's tarfile takes an archive cut inside a member's header for a
    complete one, silently dropping the rest; the missing end marker tells.
    """
    path = Path(url)
    if not path.is_file():
        return False
    size = path.stat().st_size
    with path.open("rb") as file:
        file.seek(max(0, size - 1024))
        return size < 1024 or any(file.read())


def _tar_image(record: Mapping[str, object]) -> bytes:
    return next((record[s] for s in IMAGE_SUFFIXES if s in record), b"")


def _tar_captions(record: Mapping[str, object]) -> tuple[str, ...]:
    """A sample's captions: its ``.txt``, else the ``caption``/``captions``/``text`` of its ``.json``."""
    if "txt" in record:
        return _clean([record["txt"].decode("utf-8", "replace")])
    if "json" in record:
        try:
            meta = json.loads(record["json"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ()
        if isinstance(meta, dict):
            value = next((meta[k] for k in ("caption", "captions", "text") if k in meta), None)
            return _clean(value if isinstance(value, list) else [value])
    return ()


def _read_table(path: str, kind: str) -> Iterator[CaptionSample]:
    """The samples of one Parquet or Arrow file, a record batch at a time."""
    pa = require("pyarrow", "reading Hugging Face datasets", "distributed")
    try:
        if kind == "parquet":
            file = require("pyarrow.parquet", "reading Hugging Face datasets", "distributed").ParquetFile(path)
            image_column, caption_column = _columns(path, file.schema_arrow.names)
            batches = file.iter_batches(batch_size=256, columns=[image_column, caption_column])
        else:
            schema, batches = _open_arrow(pa, path)
            image_column, caption_column = _columns(path, schema.names)
        position = 0
        for batch in batches:
            for image, captions in zip(batch.column(image_column).to_pylist(), batch.column(caption_column).to_pylist()):
                yield CaptionSample(_sample_key(path, str(position)), _table_image(path, image),
                                    _clean(captions if isinstance(captions, list) else [captions]), path, position)
                position += 1
    except (OSError, pa.ArrowException) as exc:
        raise TexplainError(f"{path}: unreadable {kind} file ({_reason(exc)})") from exc


def _open_arrow(pa, path: str) -> tuple[object, Iterator]:
    """The schema and record batches of an Arrow file in either IPC layout (``save_to_disk`` writes the stream one)."""
    try:
        reader = pa.ipc.open_stream(pa.memory_map(path))
        return reader.schema, iter(reader)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(pa.memory_map(path))
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))


def _columns(path: str, names: Sequence[str]) -> list[str]:
    """The image column and the caption column among ``names``."""
    image = next((c for c in IMAGE_COLUMNS if c in names), None)
    caption = next((c for c in CAPTION_COLUMNS if c in names), None)
    if image is None or caption is None:
        raise TexplainError(f"{path}: needs an image column ({' / '.join(IMAGE_COLUMNS)}) and a caption column "
                            f"({' / '.join(CAPTION_COLUMNS)}); found {', '.join(names)}")
    return [image, caption]


def _table_image(path: str, value: object) -> bytes:
    """The encoded bytes of an ``Image`` cell (``{"bytes", "path"}``), or of a plain binary cell."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            file = Path(path).parent / value["path"]
            return file.read_bytes() if file.is_file() else b""
    return b""


def _table_files(folder: Path) -> list[Path]:
    """Parquet files under ``folder``, else Arrow files (a ``save_to_disk`` folder), sorted."""
    for suffix in HF_SUFFIXES:
        files = sorted(p for p in folder.rglob(f"*{suffix}") if not p.name.startswith("."))
        if files:
            return files
    return []


def _of_split(spec: str, files: list[Path], split: str | None) -> list[Path]:
    """The files whose path (below ``spec``) names ``split``; all of them when none names any split."""
    if split is None:
        return files
    base = Path(spec) if Path(spec).is_dir() else Path(spec).parent
    named = {f: _SPLIT.search(str(f.relative_to(base)).lower()) for f in files}
    if not any(named.values()):
        log.info("%s: its files name no split; all of them are read for split %s", spec, split)
        return files
    chosen = [f for f, m in named.items() if m and m.group(1) == split]
    if not chosen:
        present = sorted({m.group(1) for m in named.values() if m})
        raise TexplainError(f"{spec}: no files of split '{split}' (splits: {', '.join(present)})")
    return chosen


def _sample_key(shard: str, key: str) -> str:
    """``<shard>/<key>``, in the form a ``Path`` gives back, so the key survives a round trip through one."""
    return str(Path(shard) / key)


def _clean(captions: Sequence[object]) -> tuple[str, ...]:
    return tuple(c.strip() for c in captions if isinstance(c, str) and c.strip())


def _reason(exc: BaseException) -> str:
    """The cause in a few words: the first argument of ``exc``, without what webdataset appends to it."""
    first = str(exc.args[0]) if exc.args else type(exc).__name__
    return first.split(" @ ")[0].strip().splitlines()[0] if first.strip() else type(exc).__name__
