"""Explain images: features → translator → prefix → N sampled sentences → dominant words.

For each image the result is a JSON file (top words with the fraction of
sentences that contain them, a few sample sentences, the classifier's top-5
classes) and a word-cloud PNG whose red words are the predicted class's.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from texplain.analysis.class_vocabulary import ClassWordConfig, class_vocabulary
from texplain.atomic import check_writable, write_json
from texplain.data.files import check_not_inputs
from texplain.data.images import load_rgb
from texplain.errors import BadImageError, TexplainError
from texplain.generate.sampling import SamplingConfig, new_generator, sample_rows, sample_sentences
from texplain.generate.stopping import settled
from texplain.generate.words import WordConfig, WordCounter
from texplain.models.explainer import Explainer
from texplain.models.features import top_classes
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.report.wordcloud import draw_word_cloud

log = logging.getLogger(__name__)


@dataclass
class ExplainConfig:
    """What one explanation holds.

    sampling: nucleus sampling settings (N, p, length, seed). words: how
    sentences become words (top_k is the number of words kept). examples:
    sample sentences kept in the JSON. word_cloud: draw the PNG.
    """

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    words: WordConfig = field(default_factory=WordConfig)
    examples: int = 5
    word_cloud: bool = True


@dataclass
class Explanation:
    """The words that dominate the sentences the LM wrote about one set of features."""

    top_words: list[tuple[str, float]]
    sentences: list[str]
    counter: WordCounter

    def to_json(self, examples: int) -> dict:
        return {
            "top_words": [{"word": w, "frequency": round(f, 6)} for w, f in self.top_words],
            "n_sentences": self.counter.n_sentences,
            "sentences": self.sentences[:examples],
        }


def explain_features(
    translator: Translator, lm: FrozenLM, features: Tensor, config: ExplainConfig, progress: bool = False
) -> Explanation:
    """Features (T, D) of one image → its explanation."""
    return next(explain_stream(translator, lm, [features], config, progress))


def explain_lm_alone(lm: FrozenLM, config: ExplainConfig, start: Tensor | None = None) -> Explanation:
    """What the LM writes with no image at all: its sentences after the start alone, no slot before it.

    ``start`` (S, d): the translator's (:meth:`~texplain.models.translator.Translator.lm_start`),
    so that the LM alone starts where the translator's prefix ends (a chat
    LM's request for a caption); None: the end-of-sentence token, the start
    of a prefix-ready caption LM and of every translator before starts had
    a kind.
    """
    if start is None:
        start = lm.embed_tokens(torch.tensor([lm.eos_token_id], device=lm.device))  # (1, d)
    sentences = sample_sentences(lm, start, config.sampling)
    counter = WordCounter(config.words)
    counter.update(sentences)
    return Explanation(counter.top(), sentences, counter)


def explain_stream(
    translator: Translator, lm: FrozenLM, features: Iterable[Tensor], config: ExplainConfig, progress: bool = False
) -> Iterator[Explanation]:
    """Explanations of many images (features (T, D) each), in their order, decoded in shared batches.

    Every round, each active image draws its next rows
    (:attr:`~texplain.generate.sampling.SamplingConfig.rows_per_round`) and
    all of them are decoded together, each row from its own image's prefix;
    images join while their rows fit in ``batch_size`` (one at least) and
    leave once they have ``num_samples`` sentences or, when adaptive, their
    top words are settled (:func:`~texplain.generate.stopping.settled`), so
    batches stay full as images stop. Rows of different images never mix in
    the counts, and each image gets the sentences it would get alone with
    the same seed. ``features`` may be a generator: it is read as images join.
    """
    translator.eval()
    sampling = config.sampling
    if sampling.adaptive and sampling.stop.k >= len(lm.tokenizer):
        raise TexplainError(f"adaptive sampling: the top {sampling.stop.k} words can never settle with an LM of "
                            f"{len(lm.tokenizer)} tokens; choose a smaller k")
    source = iter(features)
    active: list[_Drawing] = []
    done: dict[int, Explanation] = {}
    joined = given = 0
    bar = tqdm(desc="explain", unit="img", disable=not progress)
    while True:
        while not active or sum(a.rows(sampling) for a in active) + sampling.rows_per_round <= sampling.batch_size:
            image = next(source, None)
            if image is None:
                break
            with torch.inference_mode():
                prefix = translator(image.unsqueeze(0).to(lm.device))[0]  # (P, d)
            active.append(_Drawing(joined, prefix, new_generator(lm, sampling), WordCounter(config.words)))
            joined += 1
        if not active:
            break
        drawn = sample_rows(lm, torch.stack([a.prefix for a in active]), [a.rows(sampling) for a in active],
                            [a.generator for a in active], sampling)
        for drawing, ids in zip(active, drawn):
            drawing.add([lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids])
        for drawing in [a for a in active if a.finished(sampling)]:
            done[drawing.index] = drawing.explanation()
            active.remove(drawing)
            bar.update(1)
        while given in done:
            yield done.pop(given)
            given += 1
    bar.close()


@dataclass
class _Drawing:
    """An image whose sentences are being drawn: its prefix (P, d), generator, counts and sentences so far."""

    index: int
    prefix: Tensor
    generator: torch.Generator
    counter: WordCounter
    sentences: list[str] = field(default_factory=list)

    def rows(self, sampling: SamplingConfig) -> int:
        """Sentences this image draws in the next round."""
        return min(sampling.rows_per_round, sampling.num_samples - len(self.sentences))

    def add(self, sentences: list[str]) -> None:
        self.counter.update(sentences)
        self.sentences.extend(sentences)

    def finished(self, sampling: SamplingConfig) -> bool:
        """At the cap, or (adaptive) settled."""
        if len(self.sentences) >= sampling.num_samples:
            return True
        return sampling.adaptive and settled(self.counter.document_counts(), self.counter.n_sentences, sampling.stop)

    def explanation(self) -> Explanation:
        return Explanation(self.counter.top(), self.sentences, self.counter)


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
    Where each result goes is settled first (:func:`output_files`).
    """
    config = config or ExplainConfig()
    classifier, translator, lm = explainer.classifier, explainer.translator, explainer.lm
    records, skipped = [], []
    outputs = output_files(paths, out_dir)
    for path in tqdm(paths, desc="explain", unit="img", disable=not progress):
        try:
            image = load_rgb(path)
        except BadImageError as exc:
            skipped.append((str(path), str(exc)))
            log.warning("skipped %s", exc)
            continue
        pixels = classifier.preprocess(image).unsqueeze(0).to(classifier.device)  # (1, 3, H, W)
        with torch.inference_mode():
            features, logits = classifier.features_and_logits(pixels)  # (1, T, D), (1, C)
        explanation = explain_features(translator, lm, features[0], config)
        prediction = top_classes(logits, classifier.class_names)[0]
        record = {
            "image": str(path),
            **explanation.to_json(config.examples),
            "prediction": prediction,
            "sampling": asdict(config.sampling),
        }
        json_file, cloud_file = outputs[str(path)]
        write_json(json_file, record)
        if config.word_cloud and explanation.top_words:
            red = class_vocabulary(prediction[0]["name"], ClassWordConfig(), config.words)
            draw_word_cloud(dict(explanation.top_words), cloud_file, highlight=red, seed=config.sampling.seed)
        records.append(record)
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
    folders joined by ``__``; and a number after any name still taken.
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
        name, number = base, 1
        while name.casefold() in taken:
            number += 1
            name = f"{base}-{number}"
        taken.add(name.casefold())
        names[path] = name
    return names
