"""Train or fine-tune an image classifier on labelled images, and measure it per group.

TExplain explains a classifier that is given; this module makes one when
there is none (the demo trains a small CNN on a biased split) and fine-tunes
one later (mitigation). Accuracy is reported per group (class × background,
or whatever groups the data names), with the worst group beside the average,
because a shortcut shows in the worst group first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from texplain.data.images import load_rgb
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.models.classifiers import (
    INPUT_SUFFIX,
    Classifier,
    capture,
    head_name,
    logits_of,
)
from texplain.progress import tqdm
from texplain.training.config import ClassifierTrainConfig
from texplain.training.schedule import warmup_cosine

log = logging.getLogger(__name__)




def load_pixels(classifier: Classifier, items: Sequence[LabelledImage], progress: bool = False) -> Tensor:
    """Preprocess every image once: (N, 3, H, W). Small sets only (the demo's, a few thousand)."""
    return torch.stack([classifier.preprocess(load_rgb(i.path)) for i in tqdm(items, desc="load", unit="img", disable=not progress)])


def label_indices(items: Sequence[LabelledImage], class_names: Sequence[str]) -> Tensor:
    """Labels as class indices (N,); an unknown label is refused with its image named."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [i for i in items if i.label not in index]
    if unknown:
        raise TexplainError(f"{unknown[0].path}: label {unknown[0].label!r} is not one of {', '.join(class_names)}")
    return torch.tensor([index[i.label] for i in items])


def train_classifier(
    classifier: Classifier,
    pixels: Tensor,
    labels: Tensor,
    config: ClassifierTrainConfig | None = None,
    progress: bool = True,
) -> list[float]:
    """Train ``classifier`` (all weights, or its head alone) on pixels (N, 3, H, W) and labels (N,).

    Returns the loss per epoch. The classifier is frozen and in eval mode
    again afterwards, ready to be explained; after head-only training its
    ``features_of`` still names the classifier its features come from.
    """
    config = config or ClassifierTrainConfig()
    if len(pixels) < 2:
        raise TexplainError("classifier training: need at least 2 images")
    device = torch.device(config.device)
    module = classifier.module.to(device).eval().requires_grad_(False)
    if config.head_only:
        name = head_name(module)
        model, inputs = module.get_submodule(name), head_inputs(module, name, pixels, config.batch_size, progress)
    else:
        model, inputs = module, pixels
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(pixels) // config.batch_size)
    scheduler = warmup_cosine(optimizer, max(1, steps // 10), steps)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    bar = tqdm(range(config.epochs), desc="train classifier", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(pixels), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = nn.functional.cross_entropy(logits_of(model(inputs[index].to(device))), labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        losses.append(total / len(pixels))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    module.eval().requires_grad_(False)
    classifier.features_of = classifier.feature_spec if config.head_only else ""
    return losses


def head_inputs(module: nn.Module, head: str, pixels: Tensor, batch_size: int, progress: bool = False) -> Tensor:
    """What the head ``head`` receives for each image (N, ...), computed once.

    Head-only training needs no more: the rest is frozen in eval mode, so
    these inputs never change from one epoch to the next.
    """
    device = next(module.parameters()).device
    chunks = []
    with torch.no_grad(), capture(module, head + INPUT_SUFFIX) as captured:
        for start in tqdm(range(0, len(pixels), batch_size), desc="frozen features", unit="batch", disable=not progress):
            module(pixels[start : start + batch_size].to(device))
            chunks.append(captured["value"].cpu())
    return torch.cat(chunks)


def predict(classifier: Classifier, pixels: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted class indices (N,) for pixels (N, 3, H, W)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            out.append(logits_of(classifier.module(pixels[start : start + batch_size].to(classifier.device))).argmax(-1).cpu())
    return torch.cat(out)
