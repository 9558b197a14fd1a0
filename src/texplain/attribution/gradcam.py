"""Grad-CAM on a class or on a word: where in the image the classifier's features carry it.

TExplain says *which* words a classifier's features carry; Grad-CAM on a word
says *where*. The score is :mod:`.word_score`'s (the frozen LM's
log-probability of the word after the translated prefix), so its gradient
runs LM → translator → the classifier's feature map.
Captum's :class:`~captum.attr.LayerGradCam` weighs each channel of that map by
its mean gradient, sums, keeps the positive part, and
:meth:`~captum.attr.LayerAttribution.interpolate` brings it to pixel size.

The feature map is the classifier's feature layer, as the translator reads it:

- a CNN map (B, C, h, w), at a module's output or input (``name:input``);
- a ViT token grid (B, P+1, D): the prefix tokens (class token, registers)
  are dropped and the P patch tokens reshaped to their (h, w) grid.

Captum hooks a module, so the map is routed through :class:`GridTap`, an
identity module on the (B, C, h, w) grid that a hook on the feature layer
inserts into the classifier's forward pass; the values the classifier and the
translator see are unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from texplain.attribution.heat import normalise
from texplain.attribution.word_score import DEFAULT_TEMPLATES, word_log_prob, word_token_rows
from texplain.errors import TexplainError
from texplain.models.classifiers import INPUT_SUFFIX, Classifier, as_tokens, logits_of
from texplain.models.lm import FrozenLM

Score = Callable[[Tensor, Tensor], Tensor]
"""(features (B, T, D), logits (B, C)) → one score per image (B,)."""


class GridTap(nn.Module):
    """Identity on a feature grid (B, C, h, w): the module Grad-CAM hooks."""

    def forward(self, grid: Tensor) -> Tensor:
        return grid


def class_cam(classifier: Classifier, pixels: Tensor, class_index: int, layer: str | None = None) -> Tensor:
    """Grad-CAM of one class's logit: pixels (1, 3, H, W) → heat map (H, W) in [0, 1]."""
    return feature_cam(classifier, pixels, lambda _features, logits: logits[:, class_index], layer=layer)


def word_cam(
    classifier: Classifier,
    translator: nn.Module,
    lm: FrozenLM,
    pixels: Tensor,
    word: str,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    layer: str | None = None,
) -> Tensor:
    """Grad-CAM of a word: pixels (1, 3, H, W) → heat map (H, W) in [0, 1].

    The score is :func:`word_log_prob` of ``word`` after the prefix the
    translator makes from the classifier's features. The translator must read
    the classifier's feature layer; ``layer`` is where the map is taken
    (default: that feature layer; see :func:`feature_cam`).
    """
    rows = word_token_rows(lm, word, templates)
    translator.eval()

    def score(features: Tensor, _logits: Tensor) -> Tensor:
        prefix = translator(features.to(lm.device))  # (B, K, d)
        return word_log_prob(lm, prefix, rows)  # (B,)

    return feature_cam(classifier, pixels, score, layer=layer)


def feature_cam(
    classifier: Classifier, pixels: Tensor, score: Score, upsample: bool = True, layer: str | None = None
) -> Tensor:
    """Grad-CAM of any score of (features, logits): pixels (1, 3, H, W) → (H, W) in [0, 1].

    The map is taken at the classifier's feature layer, or at ``layer``, an
    earlier module whose output is a (B, C, h, w) map: at 64 px a CNN's last
    map is 2 x 2, too coarse to tell an object from its background, while an
    earlier stage's 8 x 8 is not (see :func:`finer_layer`). The score always
    reads the feature layer. With ``upsample=False`` the map stays at its grid's
    size (h, w). An all-zero map means no region raises the score.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    if pixels.dim() != 4 or pixels.shape[0] != 1:
        raise TexplainError(f"Grad-CAM: pixels must have shape (1, 3, H, W), got {tuple(pixels.shape)}")
    tap = GridTap()

    def forward(x: Tensor) -> Tensor:
        with tapped(classifier, tap) as captured:
            logits = logits_of(classifier.module(x))  # (B, C)
        return score(captured["features"], logits)  # (B,)

    target = tap if layer is None else classifier.module.get_submodule(layer)
    with torch.enable_grad():
        cam = LayerGradCam(forward, target).attribute(pixels.detach().clone(), relu_attributions=True)  # (1, 1, h, w)
    if upsample:
        cam = LayerAttribution.interpolate(cam, tuple(pixels.shape[-2:]), interpolate_mode="bilinear")  # (1, 1, H, W)
    return normalise(cam[0, 0].detach())


def finer_layer(classifier: Classifier, pixels: Tensor, min_side: int = 8) -> str | None:
    """The deepest module whose output is a spatial map (B, C, h, w) with min(h, w) >= ``min_side``.

    Found by one forward pass of ``pixels`` (1, 3, H, W) with a hook on every
    module: the last to finish at that resolution is the stage that holds its
    blocks. None when no module gives such a map (a ViT's tokens, a tiny input):
    Grad-CAM then stays at the feature layer.
    """
    finished: list[str] = []
    handles = []
    for name, module in classifier.module.named_modules():
        if name:
            def hook(_m, _args, out, name=name):
                if isinstance(out, Tensor) and out.dim() == 4 and min(out.shape[-2:]) >= min_side:
                    finished.append(name)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            classifier.module(pixels.to(classifier.device))
    finally:
        for handle in handles:
            handle.remove()
    return finished[-1] if finished else None


@contextlib.contextmanager
def tapped(classifier: Classifier, tap: GridTap) -> Iterator[dict[str, Tensor]]:
    """Route the feature layer's value through ``tap`` for the duration of the block.

    Yields a dict whose ``"features"`` is set to the tapped features as
    tokens (B, T, D) on each forward pass; the classifier's later layers see
    the same values as without the tap.
    """
    module = classifier.module
    layer = classifier.feature_layer
    target = module.get_submodule(layer.removesuffix(INPUT_SUFFIX))
    captured: dict[str, Tensor] = {}

    def through_tap(value: object) -> Tensor:
        if not isinstance(value, Tensor):
            raise TexplainError(f"Grad-CAM: feature layer {layer} gives {type(value).__name__}, not a tensor")
        routed = route_through(value, tap, token_grid(module, value))
        captured["features"] = as_tokens(routed)  # (B, T, D)
        return routed

    if layer.endswith(INPUT_SUFFIX):
        handle = target.register_forward_pre_hook(lambda _m, args: (through_tap(args[0]), *args[1:]))
    else:
        handle = target.register_forward_hook(lambda _m, _args, out: through_tap(out))
    try:
        yield captured
    finally:
        handle.remove()


def route_through(value: Tensor, tap: GridTap, grid: tuple[int, int, int]) -> Tensor:
    """Send a feature value through ``tap`` as a (B, C, h, w) grid; return it in its own layout.

    value: a CNN map (B, C, h, w), or tokens (B, P+n, D) whose first n are
    prefix tokens; grid: (n, h, w) from :func:`token_grid`.
    """
    if value.dim() == 4:
        return tap(value)  # (B, C, h, w)
    prefix, h, w = grid
    batch, _, dim = value.shape
    patches = value[:, prefix:].transpose(1, 2).reshape(batch, dim, h, w)  # (B, D, h, w)
    patches = tap(patches).flatten(2).transpose(1, 2)  # (B, P, D)
    return torch.cat([value[:, :prefix], patches], dim=1)  # (B, P+n, D)


def token_grid(module: nn.Module, value: Tensor) -> tuple[int, int, int]:
    """(prefix tokens n, grid height h, grid width w) of a feature value.

    A CNN map (B, C, h, w) has no prefix. For tokens (B, T, D) the grid comes
    from timm's ``patch_embed.grid_size`` and ``num_prefix_tokens`` when the
    model has them, else from the largest square that fits T (the rest are
    prefix tokens). Pooled features have no grid: a one-line error.
    """
    if value.dim() == 4:
        return 0, int(value.shape[2]), int(value.shape[3])
    tokens = int(value.shape[1]) if value.dim() == 3 else 1
    grid_size = getattr(getattr(module, "patch_embed", None), "grid_size", None)
    if value.dim() == 3 and grid_size is not None:
        h, w = (int(s) for s in grid_size)
        if h * w <= tokens:
            return tokens - h * w, h, w
    side = math.isqrt(tokens)
    if value.dim() != 3 or side < 2 or tokens - side * side > side:
        raise TexplainError(
            f"Grad-CAM: the feature layer gives {tuple(value.shape)}, not a spatial map or a token grid; "
            "use a spatial feature layer (a CNN's map or a ViT's tokens)"
        )
    return tokens - side * side, side, side
