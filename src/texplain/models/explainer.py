"""Everything explaining needs, loaded in one call: classifier, translator and language model.

In the spirit of open_clip's ``create_model_and_transforms``: a translator
checkpoint records the classifier (and its feature layer) and the LM it was
trained for, so naming the translator is enough. A classifier or LM named
explicitly replaces the recorded one, and is checked against the translator
first: a translator is never paired with features or an LM it was not trained
for. Every command that explains (``explain``, ``explain-dataset``,
``evaluate``, ``mitigate``), the demo and the benchmarks load through here.

A checkpoint is data: the classifier it records is loaded only through the
built-in backends unless the caller trusts code (``trust_code``), as for a
saved classifier folder (:mod:`texplain.models.classifiers`), and neither it
nor the LM may run a Hugging Face model's own code (:mod:`texplain.models.hub`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from texplain.errors import TexplainError
from texplain.models.classifiers import Classifier, is_factory, load_classifier
from texplain.models.lm import FrozenLM, load_lm
from texplain.models.translator import Translator, load_translator


@dataclass
class Explainer:
    """A frozen classifier, the translator from its features, and the frozen LM that reads the prefix."""

    classifier: Classifier
    translator: Translator
    lm: FrozenLM

    def to(self, device: str | torch.device) -> Explainer:
        """Move all three to ``device``; returns self."""
        self.classifier.to(device)
        self.translator.to(device)
        self.lm.to(device)
        return self


def load_explainer(
    translator: str | os.PathLike,
    classifier: str | Classifier | None = None,
    lm: str | FrozenLM | None = None,
    device: str | torch.device = "cpu",
    trust_code: bool = False,
) -> Explainer:
    """Load a translator checkpoint and the classifier and LM it was trained for, on ``device``.

    ``classifier`` and ``lm`` may be names (as the command line takes them)
    or loaded objects; None means the ones the translator records.
    ``trust_code`` lets a recorded classifier, or a classifier folder, run
    code from outside texplain, and a Hugging Face model its own code.
    """
    classifier_name = classifier.spec if isinstance(classifier, Classifier) else classifier
    lm_name = lm.spec if isinstance(lm, FrozenLM) else lm
    model = load_translator(translator, classifier=classifier_name, lm=lm_name)
    provenance = model.provenance
    if classifier is None and is_factory(provenance.classifier) and not trust_code:
        raise TexplainError(f"{translator}: records the classifier {provenance.classifier!r}, a Python factory that "
                            "would run; name the classifier with -c, or load it only if you trust it, with --trust-code")
    if not isinstance(classifier, Classifier):
        with _recorded(translator, classifier, "classifier", "-c"):
            classifier = load_classifier(classifier or provenance.classifier, feature_layer=provenance.feature_layer,
                                         trust_code=trust_code)
    if not isinstance(lm, FrozenLM):
        with _recorded(translator, lm, "language model", "--lm"):
            lm = load_lm(lm or provenance.lm, trust_code=trust_code)
    model.check_lm(lm)
    return Explainer(classifier, model, lm).to(device)


@contextlib.contextmanager
def _recorded(translator: str | os.PathLike, given: object, what: str, option: str) -> Iterator[None]:
    """When the model a translator records (none ``given``) cannot be loaded, say so and which option names another."""
    try:
        yield
    except TexplainError as exc:
        if given is not None:
            raise
        raise TexplainError(f"{exc}; it is the {what} {translator} was trained for: name one to use with {option}") from exc
