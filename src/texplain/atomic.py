"""Write files and folders so that a crash never leaves a half-written result behind.

Everything the project writes goes to a temporary name beside its target and
is renamed over it: readers see the old version or the new one, never a mix.
Temporary names carry a random part, so two writers never share one, and a
failed write removes its temporary file or folder. A full disk, a quota or a
read-only file system is a one-line :class:`~texplain.errors.TexplainError`
naming the target, which keeps its old version. A command checks that it can
write its output folder (:func:`check_writable`) before its long work, not
after.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from texplain.errors import TexplainError

DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""What the file system says when it cannot take more: full, over quota, file too large, read-only."""


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, rename it over ``path``.

    The parent folder is created. The temporary name ends in ``.tmp``, so a
    writer that picks the format from the suffix must be told the format.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with _disk_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def building_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; when the block ends without error, swap it in.

    On an error the temporary folder is deleted and ``folder`` is untouched.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
    try:
        with _disk_errors(folder):
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            yield tmp
            replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _disk_errors(target: Path) -> Iterator[None]:
    """Turn a full disk (:data:`DISK_ERRORS`) while writing ``target`` into one line naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        raise TexplainError(f"{target}: not written ({exc.strerror or exc}); what was written before is kept") from exc


def check_writable(folder: str | os.PathLike) -> Path:
    """Make sure files can be written in ``folder`` (or it can be made), leaving nothing behind.

    A file is written and deleted in ``folder``, or in the nearest folder
    above it that exists; an error names ``folder``, in one line.
    """
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise TexplainError(f"{folder}: cannot write there ({exc.strerror or exc})") from exc
    return folder


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (creating the parent folder)."""
    with writing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, value: object) -> Path:
    """Write ``value`` as indented JSON atomically."""
    return write_text(path, json.dumps(value, indent=1, ensure_ascii=False))


def replace_folder(new: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Put the finished folder ``new`` in the place of ``folder``.

    The old folder (if any) moves aside under a unique name first and is
    deleted last, so ``folder`` always holds a complete old or new version.
    """
    new, folder = Path(new), Path(folder)
    old = folder.with_name(f".{folder.name}.old-{secrets.token_hex(4)}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
