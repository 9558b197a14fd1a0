"""Explain image files into a folder: per image a JSON record and a word cloud whose red words name its class.

A record holds the top words with the fraction of sentences that contain
them, a few sample sentences, the classifier's top-5 classes and the sampling
settings. Where each image's files go is settled before any work
(:func:`output_files`), so a bad ``--out`` fails before a model is loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from torch import Tensor

from texplain.atomic import NAME_MAX, check_writable, write_json
from texplain.data.files import check_not_inputs
from texplain.generate.config import ExplainConfig
from texplain.generate.explain import explain_stream
from texplain.models.config import ExtractionConfig
from texplain.models.explainer import Explainer
from texplain.models.features import ImageItem, classify_images
from texplain.report.wordcloud import draw_word_cloud
from texplain.text.class_vocabulary import class_vocabulary
from texplain.text.config import ClassWordConfig

log = logging.getLogger(__name__)


def explain_images(
    explainer: Explainer,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: ExplainConfig | None = None,
    progress: bool = True,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Explain each image into ``out_dir``; returns the JSON records and the skipped (path, reason).

    A bad image is skipped and reported, never fatal; the same seed gives the
    same sentences for every image, so images are compared on equal terms.
    """
    return write_explanations(explainer, output_files(paths, out_dir), config, progress)


def write_explanations(
    explainer: Explainer,
    outputs: Mapping[str, tuple[Path, Path]],
    config: ExplainConfig | None = None,
    progress: bool = True,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Explain each image of ``outputs`` (path → its JSON and PNG, from :func:`output_files`) into its files.

    Images are read and classified in batches, and their sentences drawn in
    shared batches (:func:`~texplain.generate.explain.explain_stream`), each
    image's the same as alone. Returns the records and the skipped (path, reason).
    """
    config = config or ExplainConfig()
    classifier = explainer.classifier
    skipped: list[tuple[str, str]] = []
    read: deque[tuple[str, list[dict]]] = deque()  # (path, top-5 classes) of images classified, not yet explained

    def features() -> Iterator[Tensor]:
        items = (ImageItem(path) for path in outputs)
        for batch in classify_images(classifier, items, ExtractionConfig.batch_size, skipped):
            for item, tokens, top5 in zip(batch.items, batch.features, batch.top5):
                read.append((item.key, top5))
                yield tokens  # (T, D)

    records = []
    for explanation in explain_stream(explainer.translator, explainer.lm, features(), config, progress):
        path, prediction = read.popleft()
        record = {
            "image": path,
            **explanation.to_json(config.examples),
            "prediction": prediction,
            "sampling": asdict(config.sampling),
        }
        json_file, cloud_file = outputs[path]
        write_json(json_file, record)
        if config.word_cloud and explanation.top_words:
            red = class_vocabulary(prediction[0]["name"], ClassWordConfig(), config.words)
            draw_word_cloud(dict(explanation.top_words), cloud_file, highlight=red, seed=config.sampling.seed)
        records.append(record)
    for path, reason in skipped:
        log.warning("skipped %s", reason)
    return records, skipped


def output_files(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> dict[str, tuple[Path, Path]]:
    """Each image's JSON record and word cloud in ``out_dir``: ``NAME.json`` and ``NAME.png`` (:func:`output_names`).

    Settled before any work: ``out_dir`` must be writable, and no output may
    be one of the input files (``--out`` the image folder, holding ``x.png``).
    """
    out = check_writable(out_dir)
    outputs = {path: (out / f"{name}.json", out / f"{name}.png") for path, name in output_names(paths).items()}
    check_not_inputs([file for pair in outputs.values() for file in pair], paths)
    return outputs


def output_names(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """A file name without suffix per image, unique even where case does not count (macOS, Windows).

    The file's stem; where stems repeat (``x.jpg``, ``x.png``), its file name;
    where those repeat too (``a/x.jpg``, ``b/x.jpg``), its path with the
    folders joined by ``__``; and a number after any name still taken. A
    name too long for a file name with its ``.json`` is cut and ends in a
    hash of the image's path instead.
    """
    unique = list(dict.fromkeys(str(p) for p in paths))
    stems = Counter(Path(p).stem.casefold() for p in unique)
    files = Counter(Path(p).name.casefold() for p in unique)
    names, taken = {}, set()
    for path in unique:
        if stems[Path(path).stem.casefold()] == 1:
            base = Path(path).stem
        elif files[Path(path).name.casefold()] == 1:
            base = Path(path).name
        else:
            base = re.sub(r"[^A-Za-z0-9_.-]+", "__", path.strip("/"))
        if len(base.encode("utf-8", "surrogateescape")) > NAME_MAX - len(".json-9999"):
            digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
            cut = base.encode("utf-8", "surrogateescape")[: NAME_MAX - len(".json-9999") - len(digest) - 1]
            base = f"{cut.decode('utf-8', 'ignore')}-{digest}"
        name, number = base, 1
        while name.casefold() in taken:
            number += 1
            name = f"{base}-{number}"
        taken.add(name.casefold())
        names[path] = name
    return names
