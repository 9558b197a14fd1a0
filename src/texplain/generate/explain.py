"""Explain features: translator → prefix → N sampled sentences → dominant words.

The files ``texplain explain`` writes for image files (a JSON record and a
word cloud per image) come from :mod:`texplain.report.explained_images`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from texplain.errors import TexplainError
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.device_plan import DecodePlan
from texplain.generate.sampling import new_generator, sample_rows, sample_sentences, sampling_plan
from texplain.generate.stopping import settled
from texplain.models.lm import FrozenLM
from texplain.models.translator import Translator
from texplain.progress import tqdm
from texplain.text.words import WordCounter

log = logging.getLogger(__name__)


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
    (:attr:`~texplain.generate.device_plan.DecodePlan.rows_per_round`) and
    all of them are decoded in one call, each row from its own image's prefix;
    images join while their rows fit in the call
    (:attr:`~texplain.generate.device_plan.DecodePlan.call_sentences`: the
    batch size, or several batches for the static decoder; one image at
    least) and leave once they have ``num_samples`` sentences or, when
    adaptive, their top words are settled
    (:func:`~texplain.generate.stopping.settled`), so batches stay full as
    images stop. Rows of different images never mix in
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
    plan: DecodePlan | None = None
    bar = tqdm(desc="explain", unit="img", disable=not progress)
    while True:
        while not active or sum(a.rows(plan, sampling) for a in active) + plan.rows_per_round <= plan.call_sentences:
            image = next(source, None)
            if image is None:
                break
            with torch.inference_mode():
                prefix = translator(image.unsqueeze(0).to(lm.device))[0]  # (P, d)
            plan = plan or sampling_plan(lm, sampling, prefix.shape[0])
            active.append(_Drawing(joined, prefix, new_generator(lm, sampling), WordCounter(config.words)))
            joined += 1
        if not active:
            break
        drawn = sample_rows(lm, torch.stack([a.prefix for a in active]), [a.rows(plan, sampling) for a in active],
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

    def rows(self, plan: DecodePlan, sampling: SamplingConfig) -> int:
        """Sentences this image draws in the next round (at most what it still lacks)."""
        return min(plan.rows_per_round, sampling.num_samples - len(self.sentences))

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
