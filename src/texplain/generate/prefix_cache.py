"""The key/value cache of a decoding batch whose rows start from prefixes computed once.

The prefixes (one per image, all of length P) go through the LM once, batched
(:func:`encode_prefix`); their keys and values are copied into each decoding
batch once, row by row from the prefix of the row's image. The cache of a
batch is one preallocated buffer per layer of shape (B, H, P + capacity,
head_dim): every step writes the new keys and values in place and attention
reads a view of the filled part, so a step costs O(B) memory traffic rather
than re-concatenating the whole cache as ``DynamicCache`` does. Rows can be
dropped from the batch (:meth:`SharedPrefixLayer.batch_select_indices`).
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


def encode_prefix(lm: FrozenLM, prefixes: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Run prefixes (n, P, d) once: per-layer keys and values (n, H, P, hd) and next-token logits (n, V)."""
    out = lm.model(inputs_embeds=prefixes, use_cache=True)
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
