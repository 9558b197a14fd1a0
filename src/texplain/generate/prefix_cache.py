"""The key/value cache of a decoding batch whose rows start from prefixes computed once.

The prefixes (one per image, all of length P) go through the LM once, batched
(:func:`encode_prefix`); their keys and values are copied into the decoding
batch row by row from the prefix of the row's image. Two layouts, one per
decoder:

- :class:`SharedPrefixLayer` (the eager decoder): one preallocated buffer per
  layer of shape (B, H, P + capacity, head_dim), filled as the batch's rows
  decode in step; every step writes the new keys and values in place and
  attention reads a view of the filled part, so a step costs O(B) memory
  traffic rather than re-concatenating the whole cache as ``DynamicCache``
  does. Rows can be dropped from the batch
  (:meth:`SharedPrefixLayer.batch_select_indices`).
- :class:`StaticPrefixLayer` (the static decoder): a buffer of fixed shape
  (B, H, L, head_dim) allocated once, in which every row writes at its own
  position, so a finished row starts another sentence in place and the step
  never changes a shape or an address (it can be captured as a CUDA graph).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor
from transformers.cache_utils import CacheLayerMixin

from texplain.errors import TexplainError
from texplain.models.lm import FrozenLM

CACHE_CHUNK = 32
"""Token positions a batch's cache buffer grows by when it is full."""

_CACHE_ARGUMENT = "cache"
"""Name of the forward argument and output field of the cache in transformers 5.2x."""


def encode_prefix(
    lm: FrozenLM, prefixes: Tensor, model: torch.nn.Module | None = None
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Run prefixes (n, P, d) once: per-layer keys and values (n, H, P, hd) and next-token logits (n, V).

    ``model``: the LM's weights to run (default ``lm.model``; the static
    decoder passes its bfloat16 copy).
    """
    model = lm.model if model is None else model
    out = model(inputs_embeds=prefixes.to(model.get_input_embeddings().weight.dtype), use_cache=True)
    cache = out.cache if _CACHE_ARGUMENT in out else out.past_key_values
    if not getattr(cache, "layers", None):
        raise TexplainError("sampling: this transformers version has no per-layer caches; transformers 5 is needed")
    keys, values = [], []
    for layer in cache.layers:
        if getattr(layer, "keys", None) is None:
            raise TexplainError(f"sampling: language model {lm.spec} has layers without a key/value cache")
        keys.append(layer.keys)  # (n, H, P, hd)
        values.append(layer.values)  # (n, H, P, hd)
    return keys, values, out.logits[:, -1].float()  # (n, V)


def cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that takes a cache: ``cache`` from transformers 5.2x, ``past_key_values`` before.

    Passing the other name would not fail: it would vanish into ``**kwargs``
    and the model would silently decode without the prefix.
    """
    parameters = inspect.signature(type(model).forward).parameters
    return _CACHE_ARGUMENT if _CACHE_ARGUMENT in parameters else "past_key_values"


class SharedPrefixLayer(CacheLayerMixin):
    """One attention layer's cache for a decoding batch, seeded with the rows' prefixes.

    Keys and values live in a buffer (B, H, capacity, hd) whose first P
    positions are each row's prefix, copied from the prefixes (n, H, P, hd)
    once when the batch starts (``image`` (B,) says which prefix a row reads).
    :meth:`update` writes new positions in place and returns views of the
    filled part, so no step copies the cache. The buffer grows by
    :data:`CACHE_CHUNK` positions when full.
    """

    is_sliding = False

    def __init__(self, prefix_keys: Tensor, prefix_values: Tensor, image: Tensor):
        super().__init__()
        _, heads, length, head_dim = prefix_keys.shape
        capacity = length + CACHE_CHUNK
        batch = image.shape[0]
        self._keys = prefix_keys.new_empty((batch, heads, capacity, head_dim))  # (B, H, C, hd)
        self._values = prefix_values.new_empty((batch, prefix_values.shape[1], capacity, prefix_values.shape[3]))
        self._keys[:, :, :length] = prefix_keys[image]
        self._values[:, :, :length] = prefix_values[image]
        self.length = length
        self.device = prefix_keys.device
        self.is_initialized = True
        self._expose()

    @property
    def batch_size(self) -> int:
        return self._keys.shape[0]

    def _expose(self) -> None:
        """Point ``keys``/``values`` at the filled part (B, H, length, hd), as other cache layers do."""
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def _grow(self, needed: int) -> None:
        """Reallocate the buffers with room for at least ``needed`` positions."""
        capacity = max(needed, self._keys.shape[2] + CACHE_CHUNK)
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((*old.shape[:2], capacity, old.shape[3]))
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        raise TexplainError("sampling: a shared-prefix cache layer is created already filled")

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Append new keys/values (B, H, q, hd) in place; return all (B, H, length, hd)."""
        end = self.length + key_states.shape[2]
        if end > self._keys.shape[2]:
            self._grow(end)
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep only the rows ``indices`` (B',), copying just their filled positions."""
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            new = old.new_empty((indices.shape[0], *old.shape[1:]))
            new[:, :, : self.length] = old[indices, :, : self.length]
            setattr(self, name, new)
        self._expose()


class StaticPrefixLayer(CacheLayerMixin):
    """One attention layer's cache for the static decoder: buffers (B, H, L, hd) allocated once.

    Each row writes the keys and values of its step at its own position
    (``positions`` (B,), a tensor the decoder shares with every layer and
    sets before each step), so rows hold sentences of different lengths, and
    a finished row starts another sentence in place (:meth:`start` copies its
    image's prefix into its first P positions). :meth:`update` returns the
    whole buffers; the decoder's attention mask hides each row's positions
    after its own (stale keys of an earlier sentence included).
    """

    is_sliding = False
    is_compileable = True

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, like: Tensor, positions: Tensor):
        super().__init__()
        self.keys = like.new_zeros((batch, heads, length, head_dim))  # (B, H, L, hd)
        self.values = like.new_zeros((batch, heads, length, head_dim))  # (B, H, L, hd)
        self.positions = positions  # (B,)
        self.rows = torch.arange(batch, device=like.device)  # (B,)
        self.device = like.device
        self.is_initialized = True

    def start(self, rows: Tensor, prefix_keys: Tensor, prefix_values: Tensor) -> None:
        """Seed rows (m,) with prefixes' keys and values (m, H, P, hd) in their first P positions."""
        length = prefix_keys.shape[2]
        self.keys[rows, :, :length] = prefix_keys.to(self.keys.dtype)
        self.values[rows, :, :length] = prefix_values.to(self.values.dtype)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        raise TexplainError("sampling: a static prefix cache layer is allocated when the decoder is made")

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Write one step's keys/values (B, H, 1, hd) at each row's position; return the buffers (B, H, L, hd)."""
        self.keys[self.rows, :, self.positions] = key_states[:, :, 0]
        self.values[self.rows, :, self.positions] = value_states[:, :, 0]
        return self.keys, self.values

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        return self.keys.shape[2], 0

    def get_seq_length(self) -> int:
        return self.keys.shape[2]

    def get_max_length(self) -> int:
        return self.keys.shape[2]
