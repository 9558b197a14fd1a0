"""texplain: explain what a frozen image classifier has learned, in words.

The public API, imported on first use (so that the command line and the
results readers start without loading torch)::

    from texplain import load_explainer, explain_images
    explainer = load_explainer("runs/translator")           # classifier, translator, LM
    records, skipped = explain_images(explainer, ["cat.jpg"], "runs/explained")
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_explainer": "texplain.models.explainer",
    "Explainer": "texplain.models.explainer",
    "explain_images": "texplain.report.explained_images",
    "explain_features": "texplain.generate.explain",
    "ExplainConfig": "texplain.generate.config",
    "SamplingConfig": "texplain.generate.config",
    "explain_dataset": "texplain.analysis.explain_dataset",
    "analyse_folders": "texplain.analysis.analyse",
    "load_classifier": "texplain.models.classifiers",
    "load_lm": "texplain.models.lm",
    "load_translator": "texplain.models.translator",
    "TexplainError": "texplain.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import a public name from its module when it is first used."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'texplain' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
