"""Write files so that a crash never leaves a half-written result behind.

Everything the project writes goes to a temporary file beside its target and
is renamed over it: readers see the old file or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, value: object) -> Path:
    """Write ``value`` as indented JSON atomically."""
    return write_text(path, json.dumps(value, indent=1, ensure_ascii=False))


def replace_folder(new: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Put the finished folder ``new`` in the place of ``folder``.

    The old folder (if any) moves aside under a unique name first and is
    deleted last, so ``folder`` always holds a complete old or new version.
    """
    import secrets
    import shutil

    new, folder = Path(new), Path(folder)
    old = folder.with_name(f".{folder.name}.old-{secrets.token_hex(4)}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
