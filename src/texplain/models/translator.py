"""The translator t(.): classifier features Z (B, T, D) → K prefix embeddings (B, K, d).

The paper's translator is a three-layer MLP with batch normalisation on the
flattened features. Flattening a ViT-base grid (577 × 768 = 443k inputs) into
a dense layer that outputs K × d values would need hundreds of millions of
weights, so the handling of the token axis is a config choice:

- ``"token"`` (the default whenever T > 1): a learned linear mix over the
  token axis resamples T tokens to K (initialised as K contiguous averages),
  then the paper's three-layer BN-MLP maps each of the K tokens from D to d.
  It sees every token, its size does not grow with T·K·d, and mixing first
  makes the MLP's cost O(K) rather than O(T) per image (577 → 10 for ViT-base).
- ``"flatten"`` (the default when T = 1, i.e. pooled features): the paper's
  MLP on the flattened input, whose last layer outputs K × d.

A checkpoint is a folder: ``translator.safetensors`` plus ``translator.json``
holding the config and what it was trained for (classifier spec, feature
layer, LM). :func:`load_translator` refuses a pairing that does not match.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from texplain.atomic import write_json, writing
from texplain.errors import TexplainError
from texplain.models.classifiers import Classifier, feature_source
from texplain.models.lm import FrozenLM

WEIGHTS_FILE = "translator.safetensors"
CONFIG_FILE = "translator.json"
MODES = ("auto", "token", "flatten")


@dataclass
class TranslatorConfig:
    """Shape and size of the translator.

    in_tokens, in_dim: the feature shape (T, D). lm_dim: the LM's embedding
    width d. prefix_len: K, prefix embeddings handed to the LM. hidden: width
    of the MLP's two hidden layers. mode: ``token``, ``flatten`` or ``auto``
    (flatten when T = 1). dropout: before the last layer, against overfitting
    small caption sets.
    """

    in_tokens: int
    in_dim: int
    lm_dim: int
    prefix_len: int = 10
    hidden: int = 512
    mode: str = "auto"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TexplainError(f"translator mode {self.mode!r}: choose one of {', '.join(MODES)}")
        for name in ("in_tokens", "in_dim", "lm_dim", "prefix_len", "hidden"):
            if int(getattr(self, name)) < 1:
                raise TexplainError(f"translator {name} must be at least 1, not {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise TexplainError(f"translator dropout must be in [0, 1), not {self.dropout}")

    @property
    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "flatten" if self.in_tokens == 1 else "token"


@dataclass
class Provenance:
    """What a translator was trained for; checked whenever it is loaded for use."""

    classifier: str = ""
    feature_layer: str = ""
    lm: str = ""
    extra: dict = field(default_factory=dict)


def bn_mlp(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    """The paper's three-layer MLP with batch normalisation: (N, n_in) → (N, n_out)."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


class Translator(nn.Module):
    """Features (B, T, D) → prefix embeddings (B, K, d)."""

    def __init__(self, config: TranslatorConfig, provenance: Provenance | None = None):
        super().__init__()
        self.config = config
        self.provenance = provenance or Provenance()
        c = config
        if c.resolved_mode == "token":
            self.mix = nn.Linear(c.in_tokens, c.prefix_len)
            self.mlp = bn_mlp(c.in_dim, c.hidden, c.lm_dim, c.dropout)
            with torch.no_grad():
                self.mix.weight.copy_(contiguous_average(c.in_tokens, c.prefix_len))
                self.mix.bias.zero_()
        else:
            self.mlp = bn_mlp(c.in_tokens * c.in_dim, c.hidden, c.prefix_len * c.lm_dim, c.dropout)

    def forward(self, features: Tensor) -> Tensor:
        c = self.config
        batch = features.shape[0]
        if features.shape[1:] != (c.in_tokens, c.in_dim):
            raise TexplainError(
                f"translator expects features of shape ({c.in_tokens}, {c.in_dim}), got {tuple(features.shape[1:])}"
            )
        features = features.float()
        if c.resolved_mode == "token":
            mixed = self.mix(features.transpose(1, 2)).transpose(1, 2)  # (B, K, D)
            tokens = self.mlp(mixed.reshape(batch * c.prefix_len, c.in_dim))  # (B*K, d)
            return tokens.view(batch, c.prefix_len, c.lm_dim)  # (B, K, d)
        return self.mlp(features.reshape(batch, -1)).view(batch, c.prefix_len, c.lm_dim)  # (B, K, d)


def new_translator(classifier: Classifier, lm: FrozenLM, token_shape: tuple[int, int], **settings) -> Translator:
    """An untrained translator from ``classifier``'s features (T, D) to ``lm``'s input embeddings.

    ``settings`` are the :class:`TranslatorConfig` fields other than the
    shapes (prefix_len, hidden, mode, dropout). Its provenance names the
    classifier whose features these are (``feature_spec``), the feature layer
    and the LM, so that loading it for anything else is refused.
    """
    t, d = token_shape
    config = TranslatorConfig(in_tokens=t, in_dim=d, lm_dim=lm.embed_dim, **settings)
    provenance = Provenance(classifier=classifier.feature_spec, feature_layer=classifier.feature_layer, lm=lm.spec)
    return Translator(config, provenance)


def contiguous_average(n_in: int, n_out: int) -> Tensor:
    """A (n_out, n_in) matrix whose row k averages the k-th of n_out contiguous slices of n_in."""
    weight = torch.zeros(n_out, n_in)
    edges = torch.linspace(0, n_in, n_out + 1)
    for k in range(n_out):
        start = int(edges[k].floor())
        stop = max(start + 1, int(edges[k + 1].ceil()))
        weight[k, start:stop] = 1.0 / (stop - start)
    return weight


def save_translator(translator: Translator, folder: str | os.PathLike) -> Path:
    """Write weights and config to ``folder`` (each file to a temporary name, then renamed)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in translator.state_dict().items()}
    with writing(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(folder / CONFIG_FILE, {"config": asdict(translator.config), "provenance": asdict(translator.provenance)})
    return folder


def load_translator(
    folder: str | os.PathLike,
    classifier: str | None = None,
    feature_layer: str | None = None,
    lm: str | None = None,
) -> Translator:
    """Load a translator, refusing it when it was trained for another classifier, layer or LM.

    Names are compared after resolving paths, so ``./runs/cls`` and its
    absolute path are the same classifier. A saved classifier whose head
    alone was trained counts as the classifier it got its features from.
    """

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise TexplainError(f"{folder}: not a translator checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        record = json.loads((folder / CONFIG_FILE).read_text())
        config = TranslatorConfig(**record["config"])
        provenance = Provenance(**record["provenance"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TexplainError(f"{folder / CONFIG_FILE}: not a translator config ({exc})") from exc
    for what, wanted, have in (
        ("classifier", classifier and feature_source(classifier), provenance.classifier),
        ("feature layer", feature_layer, provenance.feature_layer),
        ("language model", lm, provenance.lm),
    ):
        if wanted is not None and not same_name(wanted, have):
            raise TexplainError(f"{folder}: this translator was trained for {what} {have!r}, not {wanted!r}")
    from safetensors.torch import load_file

    translator = Translator(config, provenance)
    translator.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return translator.eval()


def same_name(a: str, b: str) -> bool:
    """Two model names are the same when equal, or when they are paths to the same place."""
    if a == b:
        return True
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return False
