"""The users' files: reading the text files that caption sets and labelled image sets come in, and never writing over them.

Shared by :mod:`texplain.data.captions` and :mod:`texplain.data.labelled`
(and every other reader of JSON): every problem is a one-line
:class:`~texplain.errors.TexplainError` naming the file (and the line, for
JSON), and choosing a split works the same way for captions and for
labelled images. A command that writes files named after its inputs checks
first that none of them is an input (:func:`check_not_inputs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from texplain.errors import TexplainError, first_line

Item = TypeVar("Item")


def read_text(path: Path) -> str:
    """A UTF-8 file's text (a leading byte-order mark dropped); unreadable text is an error.

    Only a regular file is read: a FIFO or a device would block or never end.
    """
    if path.exists() and not path.is_file() and not path.is_dir():
        raise TexplainError(f"{path}: not a regular file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise TexplainError(f"{path}: no such file") from err
    except UnicodeDecodeError as err:
        raise TexplainError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
    except OSError as err:
        raise TexplainError(f"{path}: cannot read ({err.strerror or err})") from err


def load_json(path: Path) -> Any:
    """Parse a whole JSON file; a syntax error names its line."""
    return parse_json(read_text(path), path)


def parse_json(text: str, path: Path, line: int | None = None) -> Any:
    """Parse one JSON document from ``path`` (line ``line`` of it, for JSON Lines).

    A syntax error names its line and column; a number too long for Python
    and nesting too deep for it are errors too, not crashes.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TexplainError(f"{path}:{line or err.lineno}: bad JSON ({err.msg} at column {err.colno})") from err
    except (ValueError, RecursionError) as err:
        raise TexplainError(f"{path}{f':{line}' if line else ''}: bad JSON ({first_line(err)})") from err


def select_split(source: Path, items: Sequence[Item], split: str | None, empty: str, noun: str) -> list[Item]:
    """Keep the items (anything with a ``split``) of ``split``, all when ``None``.

    ``empty`` is the message for a source with no items at all; ``noun``
    names them in the other messages ("captions", "images").
    """
    if not items:
        raise TexplainError(f"{source}: {empty}")
    if split is None:
        return list(items)
    present = sorted({item.split for item in items if item.split is not None})
    if not present:
        raise TexplainError(f"{source}: has no split information, cannot select split '{split}'")
    chosen = [item for item in items if item.split == split]
    if not chosen:
        raise TexplainError(f"{source}: no {noun} in split '{split}' (splits: {', '.join(present)})")
    return chosen


def check_not_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse, before any work, to write one of ``outputs`` over one of ``inputs`` (the same file by any name or link)."""
    known = {key: str(path) for path in inputs if (key := _identity(Path(path))) is not None}
    for output in outputs:
        if _identity(Path(output)) in known:
            raise TexplainError(f"{output}: would replace the input {known[_identity(Path(output))]}; choose another --out")


def _identity(path: Path) -> tuple[int, int] | None:
    """The file's device and inode (the same file under any name or link), None when there is none."""
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino
