"""Which part of a network fine-tuning trains, and running the frozen part before it once per image, not once per epoch.

Three choices (``ClassifierTrainConfig.trainable``):

* ``all``: every weight;
* ``head``: the last ``nn.Linear`` alone; it is trained on its inputs,
  computed once (:func:`cut_inputs`);
* ``last-stages``: the backbone's last stage and everything after it
  (:func:`last_stage`): enough to stop seeing a place that the features
  encode, which a linear head on frozen features cannot.

For ``last-stages`` the input of the first trained module (the *cut*) is
computed once per image, and each epoch runs the classifier with every
module before the cut swapped for an identity (:func:`skipping`): on 2 CPU
cores an EfficientNet-Lite0 epoch then costs its last stage's forward and
backward instead of the whole network's. That is exact when the forward
pass is a chain through the cut (timm's and torchvision's CNNs); it is
checked on the first images (:func:`front_is_a_chain`), and where it fails
(a ViT adds its position embeddings after the patch embedding) the frozen
front runs at every step instead, without gradients.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from texplain.errors import TexplainError
from texplain.models.classifiers import INPUT_SUFFIX, capture, head_name, logits_of
from texplain.progress import tqdm
from texplain.training.config import TRAINABLE

log = logging.getLogger(__name__)


def last_stage(module: nn.Module) -> str:
    """The first module of the backbone's last stage.

    A timm model lists its stages in ``feature_info`` (the module ending each
    resolution): the last stage is what comes after the second to last of
    them (EfficientNet-Lite0: ``blocks.5``, the stride-32 blocks; ResNets:
    ``layer4``). Otherwise the block list holding the most weights (an
    ``nn.Sequential`` or ``nn.ModuleList`` of two or more) is taken and its
    last quarter trained (a ViT's last 3 of 12 blocks).
    """
    names = [name for name, _ in module.named_modules() if name]
    info = getattr(module, "feature_info", None)
    if isinstance(info, list) and len(info) >= 2 and isinstance(info[-2], dict) and info[-2].get("module") in names:
        end = info[-2]["module"]
        after = [n for n in names[names.index(end) + 1 :] if not n.startswith(end + ".")]
        if after:
            return after[0]
    lists = [(name, m) for name, m in module.named_modules()
             if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) >= 2]
    if not lists:
        raise TexplainError("fine-tuning: cannot tell this classifier's stages apart; use --finetune head or all")
    name, blocks = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
    first = len(blocks) - math.ceil(len(blocks) / 4)
    child = list(dict(blocks.named_children()))[first]
    return f"{name}.{child}" if name else child


def split_at(module: nn.Module, cut: str) -> tuple[list[str], list[str]]:
    """(the modules before ``cut``, the cut and the modules after it), sibling by sibling down the cut's path.

    Modules are ordered as registered, which is the order a chain runs them.
    """
    before, after = [], []
    parent, path = module, ""
    for part in cut.split("."):
        children = [name for name, _ in parent.named_children()]
        if part not in children:
            raise TexplainError(f"fine-tuning: the classifier has no module {cut!r}")
        prefix = f"{path}." if path else ""
        at = children.index(part)
        before += [prefix + name for name in children[:at]]
        after += [prefix + name for name in children[at + 1 :]]
        path, parent = prefix + part, parent.get_submodule(part)
    return before, [cut, *after]


def trained_modules(module: nn.Module, trainable: str) -> tuple[list[str], str | None]:
    """(names of the trained modules, the cut: the first of them, or None when everything trains)."""
    if trainable not in TRAINABLE:
        raise TexplainError(f"fine-tuning: trainable {trainable!r}: choose {', '.join(TRAINABLE)}")
    if trainable == "all":
        return [""], None
    if trainable == "head":
        head = head_name(module)
        return [head], head
    cut = last_stage(module)
    return split_at(module, cut)[1], cut


@contextlib.contextmanager
def skipping(module: nn.Module, names: Sequence[str]) -> Iterator[nn.Module]:
    """Swap the named modules for identities for the duration of the block (their weights are kept aside)."""
    saved = []
    try:
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            saved.append((parent, child, getattr(parent, child)))
            setattr(parent, child, nn.Identity())
        yield module
    finally:
        for parent, child, original in reversed(saved):
            setattr(parent, child, original)


def cut_inputs(module: nn.Module, cut: str, pixels: Tensor, batch_size: int, progress: bool = False) -> Tensor:
    """What module ``cut`` receives for each image (N, ...), computed once without gradients (pixels (N, 3, H, W))."""
    device = next(module.parameters()).device
    chunks = []
    with torch.no_grad(), capture(module, cut + INPUT_SUFFIX) as captured:
        for start in tqdm(range(0, len(pixels), batch_size), desc="frozen part", unit="batch", disable=not progress):
            module(pixels[start : start + batch_size].to(device))
            chunks.append(captured["value"].cpu())
    return torch.cat(chunks)


def front_is_a_chain(module: nn.Module, cut: str, pixels: Tensor) -> bool:
    """Whether the classifier with its front skipped gives, from the cut's inputs, the logits it gives from pixels (N, 3, H, W).

    Checked in eval mode on the images given (two suffice); an error inside
    the skipped forward pass means no, and is logged.
    """
    device = next(module.parameters()).device
    pixels = pixels.to(device)
    front = split_at(module, cut)[0]
    with torch.no_grad():
        want = logits_of(module(pixels))  # (N, C)
        inputs = cut_inputs(module, cut, pixels, len(pixels)).to(device)
        try:
            with skipping(module, front):
                have = logits_of(module(inputs))  # (N, C)
        except (RuntimeError, ValueError, TypeError) as exc:
            log.info("the front before %s is not a chain (%s): it runs at every step", cut, exc)
            return False
    return have.shape == want.shape and torch.allclose(have, want, rtol=1e-3, atol=1e-4)
