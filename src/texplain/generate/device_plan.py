"""Every choice that depends on the device, in one place: which decoder samples, in what precision, how many rows.

Two decoders draw the same distribution (:mod:`.sampling`):

- the **eager** decoder (CPUs, and anything but CUDA): batches of
  :data:`EAGER_ROWS` sentences that shrink as sentences end, tokens drawn by
  rejection without sorting. On a 2-core CPU it is 2.3-3.2x ``generate``.
- the **static** decoder (CUDA GPUs, :mod:`.static_decoder`): one batch of
  fixed shape for all the sentences of a call, rows refilled as sentences end,
  the LM in bfloat16, its step captured as a CUDA graph and nothing waiting
  for the host but a check every few steps. The batch is as large as
  :data:`MEMORY_SHARE` of the free GPU memory holds (at most
  :data:`STATIC_MAX_ROWS`).

:class:`~.config.SamplingConfig` says ``decoding="auto"`` and
``batch_size="auto"`` by default; :func:`decode_plan` turns them into a
:class:`DecodePlan`. Translator training sizes ``--batch-size auto`` with
:func:`rows_that_fit` and takes its precision from :func:`gpu_dtype`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from texplain.errors import TexplainError
from texplain.generate.prefix_cache import encode_prefix
from texplain.models.lm import FrozenLM

if TYPE_CHECKING:
    from texplain.generate.config import SamplingConfig


EAGER_ROWS = 250
"""Rows of the eager decoder's batches under ``batch_size="auto"``: tuned on a 2-core CPU."""

STATIC_MAX_ROWS = 8192
"""Most rows of a static batch under ``batch_size="auto"``.

At 8192 rows a step of SmolLM2-135M is about 2.2 TFLOP and 13 GB of cache
read, a few milliseconds each on an H200 (counted, not measured): beyond it
more rows add time in proportion and only cost memory.
"""

MEMORY_SHARE = 0.4
"""Share of the free device memory a batch sized "auto" may take (the static decoder keeps smaller batches beside it)."""

CALL_ROWS = 4
"""Sentences per static call, in batches: a call ends with its batch emptying, which a longer call amortises."""

SAMPLING_BYTES_PER_LOGIT = 48
"""Device bytes per row and vocabulary entry while a step is drawn: the logits, probabilities and a whole sort."""

_BYTES_PER_POSITION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per model: bytes of keys and values per cached position, by dtype (measured once by :func:`_cache_bytes`)."""

_STATIC_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per model: the rows :func:`_static_rows` chose, by (dtype, length), so that a plan never changes under a run."""


@dataclass(frozen=True)
class DecodePlan:
    """How one LM samples on its device (see the module docstring).

    static: the static decoder, else the eager one. graph: its step captured
    as a CUDA graph. rows: rows of a decoding batch. dtype: the LM's weights
    while decoding. rows_per_round: sentences an image draws per call.
    call_sentences: sentences gathered into one call (by several images).
    """

    static: bool
    graph: bool
    rows: int
    dtype: torch.dtype
    rows_per_round: int
    call_sentences: int


def decode_plan(lm: FrozenLM, config: SamplingConfig, prefix_length: int, budget: int) -> DecodePlan:
    """The plan for sampling ``config`` from ``lm`` after prefixes of ``prefix_length`` positions.

    ``budget``: most tokens per sentence. Under ``batch_size="auto"`` the
    static decoder's rows come from the device's free memory when first
    planned for this LM and length, and stay the same after (memory the
    decoder then holds is not counted against it).
    """
    device = lm.device
    static = config.decoding == "static" or (config.decoding == "auto" and device.type == "cuda")
    dtype = gpu_dtype(device, lm.dtype) if static else lm.dtype
    if isinstance(config.batch_size, int):
        rows = config.batch_size
    elif static and device.type == "cuda":
        rows = _static_rows(lm, dtype, prefix_length + budget)
    else:
        rows = EAGER_ROWS
    if static:
        rows_per_round = min(config.round_size, config.num_samples) if config.adaptive else config.num_samples
        call = rows * CALL_ROWS
    else:
        rows_per_round = min(config.round_size if config.adaptive else rows, config.num_samples)
        call = rows
    return DecodePlan(static, static and device.type == "cuda", rows, dtype, rows_per_round, max(call, rows_per_round))


def gpu_dtype(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.dtype:
    """bfloat16 for float32 work on a CUDA GPU that has it; else ``dtype`` unchanged."""
    if dtype == torch.float32 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return dtype


def free_memory(device: torch.device) -> int:
    """Free bytes on a CUDA device (what the driver reports plus what PyTorch's allocator holds unused)."""
    if device.type != "cuda":
        raise TexplainError(f"free memory is measured on CUDA devices, not {device}")
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def rows_that_fit(free_bytes: int, row_bytes: int, fixed_bytes: int = 0, most: int = STATIC_MAX_ROWS,
                  share: float = MEMORY_SHARE) -> int:
    """Rows of ``row_bytes`` each that fit in ``share`` of ``free_bytes`` beside ``fixed_bytes``: 1 to ``most``.

    Fewer than one is an error that says how much memory was found.
    """
    rows = int((free_bytes * share - fixed_bytes) // max(row_bytes, 1))
    if rows < 1:
        raise TexplainError(f"a batch does not fit: {free_bytes / 2**30:.1f} GiB free, a row needs "
                            f"{row_bytes / 2**20:.1f} MiB beside {fixed_bytes / 2**30:.1f} GiB; free some memory "
                            "or give a batch size")
    return min(rows, most)


def _static_rows(lm: FrozenLM, dtype: torch.dtype, length: int) -> int:
    """Rows of a static batch of sentences ``length`` positions long (prefix included) in free memory."""
    known = _STATIC_ROWS.setdefault(lm.model, {})
    if (dtype, length) not in known:
        vocab = lm.model.get_output_embeddings().weight.shape[0]
        row = _cache_bytes(lm, dtype) * length + vocab * SAMPLING_BYTES_PER_LOGIT
        copy = 0 if dtype == lm.dtype else sum(p.numel() for p in lm.model.parameters()) * dtype.itemsize
        known[(dtype, length)] = rows_that_fit(free_memory(lm.device), row, copy)
    return known[(dtype, length)]


def _cache_bytes(lm: FrozenLM, dtype: torch.dtype) -> int:
    """Bytes of keys and values per cached position of one row, in ``dtype``: one position through the LM."""
    known = _BYTES_PER_POSITION.setdefault(lm.model, {})
    if dtype not in known:
        with torch.inference_mode():
            keys, values, _ = encode_prefix(lm, torch.zeros(1, 1, lm.embed_dim, device=lm.device, dtype=lm.dtype))
        known[dtype] = sum(k[0, :, 0].numel() + v[0, :, 0].numel() for k, v in zip(keys, values)) * dtype.itemsize
    return known[dtype]
