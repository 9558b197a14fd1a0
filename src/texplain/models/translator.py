"""The translator t(.): classifier features Z (B, T, D) → K prefix embeddings (B, K, d) for the frozen LM.

The paper's translator is a three-layer MLP with batch normalisation on the
flattened features. Flattening a ViT-base grid (577 × 768 = 443k inputs) into
a dense layer that outputs K × d values would need hundreds of millions of
weights, so how the token axis is handled is a config choice (``mode``):

- ``"pooled"``: the mean over the T tokens, then the paper's MLP whose last
  layer outputs K × d. What an image holds, wherever it is.
- ``"token"``: a learned linear mix over the token axis resamples T tokens to
  K (initialised as K contiguous averages), then the MLP maps each of the K
  tokens from D to d: each slot sees a region.
- ``"resampler"``: K learned queries attend over the T tokens (one
  cross-attention layer), then the MLP maps each to d.
- ``"flatten"``: the paper's MLP on the flattened input (the default when
  T = 1, pooled features).

Two choices put the prefix where the LM is at home. With ``residual`` the
MLP's last layer starts at zero and its output is added to the LM's null
slot (its end-of-sentence embedding), so an untrained translator gives the
LM alone exactly, and training moves the prefix away from there only as far
as the caption loss pays for. With ``start_token`` the LM's start follows
the K slots: the tokens after which the LM alone writes a caption
(:func:`~texplain.models.lm.start_tokens`). For a prefix-ready caption LM
that is its end-of-sentence token, as in its pretraining; for a chat LM
such as SmolLM2-Instruct, its own chat template asking for a one-sentence
description, a start of several tokens. Both anchors are buffers copied
from the LM by :func:`new_translator`, saved with the weights; the config
names the start's kind (``anchor``) and length.

A checkpoint is a folder: ``translator.safetensors`` plus ``translator.json``
holding the config and what it was trained for (classifier spec, feature
layer, LM and its prefix recipe). :func:`load_translator` refuses a pairing
that does not match. A translator in memory names a local classifier or LM
by its absolute path; on disk the path is relative to the checkpoint's
folder (``../lm``) and is found from there when loaded, so a checkpoint works
from any working folder, and when moved together with its models. Hub ids
and ``timm:`` names are recorded as they are.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from texplain.atomic import write_json, writing
from texplain.data.files import load_json
from texplain.errors import TexplainError, first_line
from texplain.models.classifiers import Classifier, feature_source
from texplain.models.config import TranslatorConfig
from texplain.models.lm import FrozenLM, start_tokens
from texplain.weights import load_safetensors, open_safetensors

WEIGHTS_FILE = "translator.safetensors"
CONFIG_FILE = "translator.json"


@dataclass
class Provenance:
    """What a translator was trained for; checked whenever it is loaded for use.

    lm_recipe: how the LM was pretrained to read a prefix (its
    ``texplain_recipe``), None for an LM without one.
    """

    classifier: str = ""
    feature_layer: str = ""
    lm: str = ""
    lm_recipe: dict | None = None
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
    """Features (B, T, D) → prefix embeddings (B, K (+ S), d)."""

    def __init__(self, config: TranslatorConfig, provenance: Provenance | None = None):
        super().__init__()
        self.config = config
        self.provenance = provenance or Provenance()
        c = config
        self.register_buffer("null", torch.zeros(c.lm_dim))  # (d,) the LM's null slot
        self.register_buffer("start", torch.zeros(c.start_len, c.lm_dim))  # (S, d) the LM's start
        self.feature_dropout = nn.Dropout(c.feature_dropout)
        mode = c.resolved_mode
        if mode == "token":
            self.mix = nn.Linear(c.in_tokens, c.prefix_len)
            with torch.no_grad():
                self.mix.weight.copy_(contiguous_average(c.in_tokens, c.prefix_len, self.mix.weight.device))
                self.mix.bias.zero_()
        if mode == "resampler":
            self.project = nn.Linear(c.in_dim, c.hidden)
            self.queries = nn.Parameter(torch.randn(c.prefix_len, c.hidden) * 0.02)
            self.attend = nn.MultiheadAttention(c.hidden, num_heads=4 if c.hidden % 4 == 0 else 1, batch_first=True)
        width_in = {"token": c.in_dim, "resampler": c.hidden, "pooled": c.in_dim, "flatten": c.in_tokens * c.in_dim}[mode]
        per_slot = mode in ("token", "resampler")
        self.mlp = bn_mlp(width_in, c.hidden, c.lm_dim if per_slot else c.prefix_len * c.lm_dim, c.dropout)
        if c.residual:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def anchor(self, null: Tensor, start: Tensor) -> Translator:
        """Set the LM's null-slot embedding (d,) and start embeddings (S, d) that the prefix is built around."""
        if start.numel() != self.start.numel():
            raise TexplainError(f"translator: start embeddings of shape {tuple(start.shape)} do not fit its start of "
                                f"{self.config.start_len} tokens of width {self.config.lm_dim}")
        with torch.no_grad():
            self.null.copy_(null.reshape(-1))
            self.start.copy_(start.reshape(self.start.shape))
        return self

    def resting_prefix(self) -> Tensor:
        """The prefix (P, d) an untrained translator gives whatever the features: K null slots when residual, the start.

        With null slots that the LM reads as nothing, this is the LM alone
        (:meth:`lm_start`) and where training starts from.
        """
        slots = [self.null[None].expand(self.config.prefix_len, -1)] if self.config.residual else []
        return torch.cat([*slots, self.start])  # (P, d)

    def lm_start(self) -> Tensor | None:
        """The start (S, d) the LM alone is run from, the same as under the slots; None without a start."""
        return self.start if self.config.start_token else None

    def forward(self, features: Tensor) -> Tensor:
        c = self.config
        batch = features.shape[0]
        if features.shape[1:] != (c.in_tokens, c.in_dim):
            raise TexplainError(
                f"translator expects features of shape ({c.in_tokens}, {c.in_dim}), got {tuple(features.shape[1:])}"
            )
        features = self.feature_dropout(features.float())  # (B, T, D)
        mode = c.resolved_mode
        if mode == "token":
            mixed = self.mix(features.transpose(1, 2)).transpose(1, 2)  # (B, K, D)
            slots = self.mlp(mixed.reshape(batch * c.prefix_len, c.in_dim)).view(batch, c.prefix_len, c.lm_dim)
        elif mode == "resampler":
            keys = self.project(features)  # (B, T, h)
            queries = self.queries.expand(batch, -1, -1)  # (B, K, h)
            read, _ = self.attend(queries, keys, keys, need_weights=False)  # (B, K, h)
            slots = self.mlp((queries + read).reshape(batch * c.prefix_len, c.hidden)).view(batch, c.prefix_len, c.lm_dim)
        else:
            inputs = features.mean(1) if mode == "pooled" else features.reshape(batch, -1)  # (B, D) or (B, T*D)
            slots = self.mlp(inputs).view(batch, c.prefix_len, c.lm_dim)  # (B, K, d)
        if c.residual:
            slots = slots + self.null  # (B, K, d)
        if c.start_token:
            slots = torch.cat([slots, self.start.expand(batch, -1, -1)], dim=1)  # (B, K + S, d)
        return slots

    def check_lm(self, lm: FrozenLM) -> None:
        """Refuse an LM that reads prefixes another way than the one this translator was trained for."""
        if (lm.recipe or None) != (self.provenance.lm_recipe or None):
            raise TexplainError(
                f"this translator was trained for a language model with prefix recipe {self.provenance.lm_recipe}, "
                f"but {lm.spec} has {lm.recipe}; use the LM it was trained with, or train a translator for this one"
            )


def new_translator(classifier: Classifier, lm: FrozenLM, token_shape: tuple[int, int], **settings) -> Translator:
    """An untrained translator from ``classifier``'s features (T, D) to ``lm``'s input embeddings.

    ``settings`` are the :class:`TranslatorConfig` fields other than the
    shapes (prefix_len, hidden, mode, ...); K defaults to the slots a
    prefix-ready LM was pretrained with. The translator is anchored on the
    LM's end-of-sentence embedding (the null slot) and on the start that
    ``settings["anchor"]`` names (``auto`` by default, resolved for this LM
    by :func:`~texplain.models.lm.start_tokens`), and its provenance names
    the classifier whose features these are (``feature_spec``), the feature
    layer, the LM and its recipe, so that loading it for anything else is
    refused.
    """
    t, d = token_shape
    if lm.recipe and "prefix_len" not in settings:
        settings = {**settings, "prefix_len": int(lm.recipe["slots"])}
    config = TranslatorConfig(in_tokens=t, in_dim=d, lm_dim=lm.embed_dim, **settings)
    anchor, start = start_tokens(lm, config.anchor)
    config = replace(config, anchor=anchor, start_len=len(start))
    provenance = Provenance(classifier=_absolute(classifier.feature_spec), feature_layer=classifier.feature_layer,
                            lm=_absolute(lm.spec), lm_recipe=lm.recipe)
    with torch.no_grad():
        ids = torch.tensor([lm.eos_token_id, *start], device=lm.device)
        embeddings = lm.embed_tokens(ids).float().cpu()  # (1 + S, d): the null slot, then the start
    return Translator(config, provenance).anchor(embeddings[0], embeddings[1:])


def contiguous_average(n_in: int, n_out: int, device: torch.device | str | None = None) -> Tensor:
    """A (n_out, n_in) matrix whose row k averages the k-th of n_out contiguous slices of n_in.

    Computed without a loop or a read of tensor values, so that it also
    builds on the ``meta`` device (:func:`load_translator` checks a
    checkpoint's shapes there before allocating them). The device is named
    explicitly: once transformers has built a model on ``meta``, a
    ``torch.device`` context no longer reaches ``torch.linspace``.
    """
    edges = torch.linspace(0, n_in, n_out + 1, device=device)  # (n_out + 1,)
    start = edges[:-1].floor().long()  # (n_out,)
    stop = torch.maximum(start + 1, edges[1:].ceil().long())  # (n_out,)
    columns = torch.arange(n_in, device=device)  # (n_in,)
    inside = (columns >= start[:, None]) & (columns < stop[:, None])  # (n_out, n_in)
    return inside.float() / (stop - start)[:, None].float()  # (n_out, n_in)


def save_translator(translator: Translator, folder: str | os.PathLike) -> Path:
    """Write weights and config to ``folder`` (each file to a temporary name, then renamed)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in translator.state_dict().items()}
    with writing(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    provenance = translator.provenance
    provenance = replace(provenance, classifier=_portable(provenance.classifier, folder), lm=_portable(provenance.lm, folder))
    write_json(folder / CONFIG_FILE, {"config": asdict(translator.config), "provenance": asdict(provenance)})
    return folder


def _absolute(name: str) -> str:
    """The absolute path of a local model, so that it names the same model from any working folder; other names unchanged."""
    return os.path.abspath(name) if name and os.path.exists(name) else name


def _portable(name: str, folder: Path) -> str:
    """The path to a local model as seen from the checkpoint ``folder`` (``../lm``); other names unchanged."""
    if not name or not os.path.exists(name):
        return name
    relative = os.path.relpath(name, folder)
    return relative if relative.startswith("..") else os.path.join(".", relative)


def _located(name: str, folder: Path) -> str:
    """A recorded relative path, found from the checkpoint ``folder`` or a folder above it; other names unchanged.

    Checkpoints written before paths were recorded relative to their folder
    hold paths relative to where they were trained, usually a folder above
    them (``texplain-demo/lm`` for ``texplain-demo/translator``).
    """
    if ":" in name or os.path.isabs(name) or "/" not in name.replace(os.sep, "/"):
        return name
    folder = Path(os.path.abspath(folder))
    for base in (folder, *folder.parents):
        if (base / name).exists():
            return os.path.abspath(base / name)
    return name


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
    Recorded relative paths come back absolute (see the module docstring).
    """

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise TexplainError(f"{folder}: not a translator checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    record = load_json(folder / CONFIG_FILE)
    try:
        config = TranslatorConfig(**_upgrade(record["config"]))
        provenance = Provenance(**record["provenance"])
        provenance = replace(provenance, classifier=_located(provenance.classifier, folder),
                             lm=_located(provenance.lm, folder))
    except (KeyError, TypeError, AttributeError) as exc:
        raise TexplainError(f"{folder / CONFIG_FILE}: not a translator config ({exc})") from exc
    except TexplainError as exc:
        raise TexplainError(f"{folder / CONFIG_FILE}: {exc}") from exc
    for what, wanted, have in (
        ("classifier", classifier and feature_source(classifier), provenance.classifier),
        ("feature layer", feature_layer, provenance.feature_layer),
        ("language model", lm, provenance.lm),
    ):
        if wanted is not None and not same_name(wanted, have):
            raise TexplainError(f"{folder}: this translator was trained for {what} {have!r}, not {wanted!r}")
    _check_shapes(folder, config)
    translator = Translator(config, provenance)
    state = load_safetensors(folder / WEIGHTS_FILE)
    if not (config.residual or config.start_token):
        state = {**translator.state_dict(), **state}  # a checkpoint from before the anchors has none to restore
    if state.get("start") is not None and state["start"].dim() == 1:
        state = {**state, "start": state["start"][None]}  # a one-token start, saved as (d,) before starts had a length
    translator.load_state_dict(state)
    return translator.eval()


def _check_shapes(folder: Path, config: TranslatorConfig) -> None:
    """Refuse a config whose tensors are not the weights file's, before a tensor of that size is allocated.

    The translator is built on the ``meta`` device (shapes, no memory) and
    compared with the shapes in the file's header, so a config saying
    ``hidden: 1000000000000`` is one line, not an exhausted memory.
    """
    try:
        with torch.device("meta"):
            expected = {name: tuple(t.shape) for name, t in Translator(config).state_dict().items()}
    except RuntimeError as exc:  # sizes whose product overflows, even without memory
        expected, problem = {}, f"tensors too large to exist: {first_line(exc)}"
    else:
        with open_safetensors(folder / WEIGHTS_FILE) as weights:
            found = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
        if not (config.residual or config.start_token):
            found = {**{k: expected[k] for k in ("null", "start")}, **found}  # written before the anchors existed
        if len(found.get("start", ())) == 1:
            found["start"] = (1, *found["start"])  # a one-token start, saved as (d,) before starts had a length
        problem = next((f"{name}: {found.get(name)} in the file, {shape} by the config"
                        for name, shape in expected.items() if found.get(name) != shape), None)
        problem = problem or next((f"{name}: in the file, not in the translator" for name in found if name not in expected),
                                  None)
    if problem:
        raise TexplainError(f"{folder}: its {WEIGHTS_FILE} does not fit the shapes in its {CONFIG_FILE} ({problem})")


def _upgrade(config: dict) -> dict:
    """An older config as it was meant.

    Before starts had a kind, the start was the end-of-sentence token; before
    the prefix anchors existed there was no residual and no start token, and
    ``auto`` meant ``token``.
    """
    if "anchor" not in config:
        config = {**config, "anchor": "eos"}
    if "residual" in config:
        return config
    old = {**config, "residual": False, "start_token": False}
    if old.get("mode", "auto") == "auto" and old.get("in_tokens", 1) > 1:
        old["mode"] = "token"
    return old


def same_name(a: str, b: str) -> bool:
    """Two model names are the same when equal, or when they are paths to the same place."""
    if a == b:
        return True
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return False
