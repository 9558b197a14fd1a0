"""Reading weight files: safetensors, or ``torch.load`` with ``weights_only``; a damaged file is one line.

Weights never come through pickle's code path: safetensors holds plain
tensors, and ``torch.load(weights_only=True)`` accepts only tensors and
plain containers. A truncated, empty or foreign file raises a
:class:`~texplain.errors.TexplainError` naming it, instead of the reader's own
exception (safetensors and torch raise half a dozen types for a bad file).
"""

from __future__ import annotations

import os
import pickle

import torch
from torch import Tensor

from texplain.errors import TexplainError, first_line

TORCH_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError)
"""What ``torch.load`` raises on a truncated, empty or foreign file."""


def load_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise TexplainError(f"{path}: not a readable safetensors file, perhaps truncated ({first_line(exc)})") from exc


def open_safetensors(path: str | os.PathLike):
    """A safetensors file opened for reading tensors or slices of them on demand (memory-mapped)."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as exc:
        raise TexplainError(f"{path}: not a readable safetensors file, perhaps truncated ({first_line(exc)})") from exc


def load_torch_state(path: str | os.PathLike) -> dict:
    """A dict saved with ``torch.save`` (tensors and plain values only), on the CPU."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise TexplainError(f"{path}: not a readable checkpoint, perhaps truncated ({first_line(exc)})") from exc
    if not isinstance(state, dict):
        raise TexplainError(f"{path}: not a readable checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state
