"""Optional dependencies, imported when first needed, with a message that says how to install them.

Data-set analysis needs a few packages the core pipeline does not (the
``analysis`` extra): a missing one is a one-line :class:`TexplainError`, not a
traceback from deep inside a run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from texplain.errors import TexplainError

PIP_NAMES = {"yaml": "pyyaml", "scipy.stats": "scipy", "pyarrow.parquet": "pyarrow", "matplotlib.pyplot": "matplotlib",
             "ray": "ray[data]", "ray.data": "ray[data]"}


def require(module: str, purpose: str, extra: str = "analysis") -> ModuleType:
    """Import ``module`` or explain which package ``purpose`` needs and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = PIP_NAMES.get(module, module.split(".")[0])
        raise TexplainError(f"{purpose} needs {package}: pip install '{package}' (or 'texplain[{extra}]')") from exc
