"""The models room's settings: how features are extracted, and the translator's shape.

They live apart from the models (:mod:`.features`, :mod:`.translator`) so
that the command line reads their defaults without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from texplain.errors import TexplainError


@dataclass
class ExtractionConfig:
    """How features are extracted.

    batch_size: images per forward pass. fp16: store features as float16
    (half the disk, enough precision for a translator's input).
    shard_size: images per safetensors shard.
    """

    batch_size: int = 32
    fp16: bool = False
    shard_size: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise TexplainError("feature extraction: batch_size and shard_size must be at least 1")


MODES = ("auto", "pooled", "token", "resampler", "flatten")

ANCHORS = ("auto", "eos", "bos", "chat")
"""Where a translated prefix sits among an LM's tokens; see :func:`texplain.models.lm.start_tokens`."""


@dataclass
class TranslatorConfig:
    """Shape and size of the translator.

    in_tokens, in_dim: the feature shape (T, D). lm_dim: the LM's embedding
    width d. prefix_len: K, prefix slots handed to the LM (a prefix-ready
    LM's recipe says how many it reads). hidden: width of the MLP's hidden
    layers. mode: ``pooled``, ``token``, ``resampler``, ``flatten`` or
    ``auto`` (flatten when T = 1, else pooled). dropout: before the last
    layer; feature_dropout: on the input features, both against overfitting
    small caption sets. residual, start_token: see :mod:`.translator`.
    anchor: which start (:data:`ANCHORS`); ``auto`` is resolved by
    :func:`~texplain.models.translator.new_translator` for its LM.
    start_len: the start's tokens, S.
    """

    in_tokens: int
    in_dim: int
    lm_dim: int
    prefix_len: int = 8
    hidden: int = 512
    mode: str = "auto"
    dropout: float = 0.1
    feature_dropout: float = 0.0
    residual: bool = True
    start_token: bool = True
    anchor: str = "auto"
    start_len: int = 1

    def __post_init__(self) -> None:
        for name in ("in_tokens", "in_dim", "lm_dim", "prefix_len", "hidden", "start_len"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise TexplainError(f"translator {name} must be a whole number, not {getattr(self, name)!r}")
        for name in ("dropout", "feature_dropout"):
            if not isinstance(getattr(self, name), (int, float)) or isinstance(getattr(self, name), bool):
                raise TexplainError(f"translator {name} must be a number, not {getattr(self, name)!r}")
        for name in ("residual", "start_token"):
            if not isinstance(getattr(self, name), bool):
                raise TexplainError(f"translator {name} must be true or false, not {getattr(self, name)!r}")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise TexplainError(f"translator mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if not isinstance(self.anchor, str) or self.anchor not in ANCHORS:
            raise TexplainError(f"translator anchor {self.anchor!r}: choose one of {', '.join(ANCHORS)}")
        for name in ("in_tokens", "in_dim", "lm_dim", "prefix_len", "hidden", "start_len"):
            if int(getattr(self, name)) < 1:
                raise TexplainError(f"translator {name} must be at least 1, not {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.feature_dropout < 1.0:
            raise TexplainError(f"translator dropouts must be in [0, 1), not {self.dropout} and {self.feature_dropout}")

    @property
    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "flatten" if self.in_tokens == 1 else "pooled"

    @property
    def output_len(self) -> int:
        """Positions of the prefix the LM reads: K slots, and the S start tokens when there is a start."""
        return self.prefix_len + self.start_len * int(self.start_token)
