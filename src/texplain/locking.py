"""One writer per folder: an operating-system lock held for as long as a run writes there.

A run that adds to a folder piece by piece (a results folder committed chunk
by chunk, a feature store shard by shard, a translator's checkpoints) holds
an exclusive ``flock`` on :data:`LOCK_FILE` inside it. The lock belongs to the
open file, so the operating system releases it when the process ends,
however it ends: a killed run never blocks the next one. A second run that
finds the folder locked stops at once, before it writes anything, instead of
committing the same rows twice or overwriting the other run's files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from texplain.atomic import check_writable
from texplain.errors import TexplainError

LOCK_FILE = ".texplain.lock"
"""The lock file's name inside a locked folder; it stays there, empty, between runs."""


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the block; a folder locked by another run is an error."""
    import fcntl

    check_writable(folder).mkdir(parents=True, exist_ok=True)
    handle = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TexplainError(f"{folder}: another run is writing to it right now; "
                                "wait for it to finish, or write somewhere else") from None
        yield folder
    finally:
        os.close(handle)
