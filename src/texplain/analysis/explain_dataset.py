"""Explain a whole labelled image set into a results folder: streaming and resumable.

Images are explained a chunk at a time and each chunk is committed to the
results folder (:mod:`texplain.analysis.results`: Parquet parts and a manifest)
before the next starts, so a restarted run loses no row and duplicates none,
and since every image is sampled with the same seed, its rows are the rows an
unbroken run writes. The classifier's features go to ``features/`` in the
folder (or a given store), and the LM prior (:mod:`texplain.analysis.lm_prior`) to
``prior.json`` once every image is done.

A run holds the results folder's lock (:mod:`texplain.locking`) from start
to end, so a second run into the same folder stops instead of doubling rows.

Memory is O(vocabulary): one image's sentences are held while it is counted,
then only its word counts, a few example sentences and its class mentions
are kept until the chunk is written.

Chunks are explained here, one after the other, or by an engine that
explains many at once elsewhere (:class:`~texplain.analysis.ray_engine.RayEngine`:
actors on a Ray cluster, each running :func:`explain_chunk`) and hands them
back in order; either way this process alone commits them, so the folder is
the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from texplain.analysis.config import DatasetExplainConfig
from texplain.analysis.lm_prior import explain_prior, null_features
from texplain.analysis.results import PRIOR, ResultsFolder
from texplain.atomic import write_json
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig
from texplain.generate.explain import Explanation, explain_stream
from texplain.locking import locked_folder
from texplain.models.classifiers import Classifier
from texplain.models.explainer import Explainer
from texplain.models.features import FeatureStore, ImageItem, extract_into, iter_batches, open_store
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.progress import tqdm
from texplain.text.class_vocabulary import class_mentions, class_vocabularies, word_index
from texplain.text.words import rank_words

log = logging.getLogger(__name__)

FEATURES = "features"


@dataclass
class DatasetRun:
    """What a finished call did: rows written now, rows in the folder, images skipped as unreadable."""

    folder: Path
    written: int
    total: int
    skipped: list[tuple[str, str]]


Chunk = list[LabelledImage]
Explained = tuple[list[dict], list[tuple[str, str]]]
"""One chunk's rows (:func:`_row`) and its unreadable images as (path, reason)."""


class Engine(Protocol):
    """Explains chunks elsewhere and gives back each one's rows and skipped images, in the chunks' order."""

    def explain(
        self, chunks: Sequence[Chunk], features: Path, config: DatasetExplainConfig, index: Mapping[str, Sequence[str]]
    ) -> Iterator[Explained]: ...


def explain_dataset(
    explainer: Explainer,
    items: Sequence[LabelledImage],
    out: str | os.PathLike,
    config: DatasetExplainConfig | None = None,
    features: str | os.PathLike | None = None,
    progress: bool = True,
    engine: Engine | None = None,
) -> DatasetRun:
    """Explain every image of ``items`` not yet in ``out``; see the module docstring for the layout.

    ``features`` is the feature-store folder (default ``out/features``); an
    existing store of the same classifier is reused. ``engine`` explains the
    chunks elsewhere (None: here, with ``explainer``); ``explainer`` then
    still names the settings and makes the LM prior.
    """
    config = config or DatasetExplainConfig()
    classifier, translator, lm = explainer.classifier, explainer.translator, explainer.lm
    out = Path(out)
    items = _check_items(items, classifier.class_names, config.allow_unknown_labels)
    index = word_index(class_vocabularies(classifier.class_names, config.class_words, config.explain.words))
    with locked_folder(out):
        results = ResultsFolder.open(out, _settings(classifier, translator, lm, config), create=True)
        done = set(results.done_images())
        todo = [item for item in items if _image_key(item.path) not in done]
        log.info("%s: %d images done, %d to explain", out, len(done), len(todo))
        feature_folder = Path(features) if features is not None else out / FEATURES
        store = open_store(feature_folder, classifier, config.extraction)
        chunks = list(iter_batches(todo, config.chunk_size))
        if engine is None:
            explained = (explain_chunk(explainer, store, chunk, config, index) for chunk in chunks)
        else:
            explained = engine.explain(chunks, feature_folder, config, index)
        written, skipped = 0, []
        bar = tqdm(total=len(todo), desc="explain dataset", unit="img", disable=not progress)
        with contextlib.closing(explained):  # stopped here, an engine stops its work at once
            for chunk, (rows, bad) in zip(chunks, explained):
                results.commit(rows, bad)
                written += len(rows)
                skipped += bad
                bar.update(len(chunk))
        bar.close()
        if config.prior is not None and not (out / PRIOR).is_file():
            store = FeatureStore(feature_folder)
            paths = [p for p in results.done_images() if p in store]
            null = null_features(config.prior, classifier, store, paths)
            prior = explain_prior(translator, lm, null, config.explain, index, config.prior.samples)
            write_json(out / PRIOR, prior.to_dict())
        results.finish()
    return DatasetRun(out, written, len(results.done_images()), skipped)


def explain_chunk(
    explainer: Explainer,
    store: FeatureStore,
    chunk: Sequence[LabelledImage],
    config: DatasetExplainConfig,
    index: Mapping[str, Sequence[str]],
    writer: str = "",
) -> Explained:
    """Explain one chunk: features into ``store`` where missing (under ``writer``'s shards), then its rows.

    The explanations come from the features as stored, so a chunk gives the
    same rows whether its features were extracted now or by an earlier run.
    """
    items = (ImageItem(_image_key(i.path), {"label": i.label, "split": i.split, "group": i.group}) for i in chunk)
    bad = extract_into(store, explainer.classifier, items, config.extraction, writer, progress=False)
    bad_paths = {path for path, _ in bad}
    good = [item for item in chunk if _image_key(item.path) not in bad_paths]
    features = (store.features([_image_key(i.path)])[0] for i in good)
    explanations = explain_stream(explainer.translator, explainer.lm, features, config.explain)
    rows = [_row(item, store.row(_image_key(item.path))["top5"], explanation, config.explain, index)
            for item, explanation in zip(good, explanations)]
    return rows, bad


def _row(
    item: LabelledImage, top5: list[dict], explanation: Explanation, config: ExplainConfig,
    index: Mapping[str, Sequence[str]],
) -> dict:
    """One image's Parquet row: labels, prediction, word counts, class mentions, example sentences."""
    key = _image_key(item.path)
    counts = rank_words(explanation.counter.document_counts())
    mentions = class_mentions(explanation.sentences, index, config.words)
    return {
        "image": key,
        "label": item.label,
        "split": item.split,
        "group": item.group,
        "predicted": top5[0]["name"],
        "confidence": top5[0]["prob"],
        "correct": top5[0]["name"] == item.label,
        "top5": top5,
        "n_sentences": explanation.counter.n_sentences,
        "top_word": counts[0][0] if counts else None,
        "words": [{"word": w, "count": c} for w, c in counts],
        "class_mentions": [{"name": n, "count": c} for n, c in sorted(mentions.items())],
        "sentences": explanation.sentences[: config.examples],
    }


def _check_items(items: Sequence[LabelledImage], classes: Sequence[str], allow_unknown: bool) -> list[LabelledImage]:
    """Refuse an empty set, one path with two labels, or labels the classifier does not know."""
    if not items:
        raise TexplainError("explain-dataset: the image set is empty")
    by_path: dict[str, LabelledImage] = {}
    for item in items:
        key = _image_key(item.path)
        if key in by_path and by_path[key].label != item.label:
            raise TexplainError(f"{item.path}: listed twice, as {by_path[key].label!r} and {item.label!r}")
        by_path.setdefault(key, item)
    labels = {item.label for item in by_path.values()}
    unknown = sorted(labels - set(classes))
    if unknown and not allow_unknown:
        raise TexplainError(
            f"labels not among the classifier's classes: {', '.join(unknown[:5])}"
            f"{' …' if len(unknown) > 5 else ''} (classes: {', '.join(list(classes)[:8])}"
            f"{' …' if len(classes) > 8 else ''}); check the classifier, or pass --allow-unknown-labels"
        )
    missing = [name for name in classes if name not in labels]
    if missing and len(classes) <= 100:
        log.warning("classes with no image in this set (they get no aggregate): %s", ", ".join(missing))
    return list(by_path.values())


def _image_key(path: str | os.PathLike) -> str:
    """The ``image`` column: an absolute path, so a resumed run matches rows whatever its working folder."""
    return str(Path(path).resolve())


def _settings(classifier: Classifier, translator: Translator, lm: FrozenLM, config: DatasetExplainConfig) -> dict:
    """Everything that changes a row, as JSON would give it back; a results folder holds rows of one such setting."""
    settings = {
        "classifier": classifier.spec,
        "feature_layer": classifier.feature_layer,
        "class_names": list(classifier.class_names),
        "translator": {"config": asdict(translator.config), "provenance": asdict(translator.provenance),
                       "weights_sha1": _weights_digest(translator)},
        "lm": lm.spec,
        "sampling": asdict(config.explain.sampling),
        "words": asdict(config.explain.words),
        "examples": config.explain.examples,
        "class_words": config.class_words.to_json(),
        "prior": None if config.prior is None else asdict(config.prior),
    }
    return json.loads(json.dumps(settings))


def _weights_digest(translator: Translator) -> str:
    """SHA-1 of the translator's weights: two checkpoints with one config are still two translators."""
    digest = hashlib.sha1()
    for name, tensor in sorted(translator.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
