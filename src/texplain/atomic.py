"""Write files and folders so that a crash never leaves a half-written result behind.

Everything the project writes goes to a temporary name beside its target and
is renamed over it: readers see the old version or the new one, never a mix.
Temporary names carry a random part, so two writers never share one, and a
failed write removes its temporary file or folder. A full disk, a quota or a
read-only file system is a one-line :class:`~texplain.errors.TexplainError`
naming the target, which keeps its old version. A command checks that it can
write its output folder (:func:`check_writable`) or file
(:func:`check_output_file`) before its long work, not after.

Only a regular file is ever replaced: a target that is a folder, a link, a
FIFO or a device (``--json /dev/full``) is refused, since renaming over it
would replace the node itself. Every file written gets the mode a new file
gets from the user's umask (0644 under the usual 022), whatever its writer
chose (safetensors writes 0600).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from texplain.errors import TexplainError

DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
"""What the file system says when it cannot take more: full, over quota, file too large, read-only."""

NAME_MAX = 255
"""The longest file name, in bytes, on the usual file systems (ext4, XFS, APFS, NTFS)."""

NODE_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
              (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"), (stat.S_ISSOCK, "socket"))
"""What a path can be besides a regular file, as the messages name it."""


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, rename it over ``path``.

    The parent folder is created. The temporary name ends in ``.tmp``, so a
    writer that picks the format from the suffix must be told the format.
    """
    path = Path(path)
    check_replaceable(path)
    tmp = path.with_name(_temporary_name(path.name))
    try:
        with _disk_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def building_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``folder``; when the block ends without error, swap it in.

    On an error the temporary folder is deleted and ``folder`` is untouched.
    """
    folder = Path(folder)
    tmp = folder.with_name(_temporary_name(folder.name))
    try:
        with _disk_errors(folder):
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            yield tmp
            mode = new_file_mode()
            for file in tmp.rglob("*"):
                if file.is_file() and not file.is_symlink():
                    file.chmod(mode)
            replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temporary_name(name: str) -> str:
    """``.NAME.RANDOM.tmp``, with NAME shortened so that the whole fits in a file name (255 bytes)."""
    room = NAME_MAX - len(".") - len(".12345678.tmp")
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > room:
        name = encoded[:room].decode("utf-8", "ignore")
    return f".{name}.{secrets.token_hex(4)}.tmp"


def check_replaceable(path: str | os.PathLike) -> Path:
    """Refuse ``path`` unless it is absent or a regular file: a folder, link, FIFO or device is never replaced."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise TexplainError(f"{path}: cannot write there ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in NODE_KINDS if test(mode)), "not a regular file")
        raise TexplainError(f"{path}: is a {kind}, not a regular file; name a new file or a regular one to replace")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Before any work: ``path`` can be written (absent or a regular file, in a folder that takes files)."""
    path = Path(path)
    check_replaceable(path)
    check_writable(path.parent)
    return path


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0666 less the process's umask (0644 under 022)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return 0o666 & ~mask


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
