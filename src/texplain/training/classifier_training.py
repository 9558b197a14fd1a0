"""Train or fine-tune an image classifier on labelled images, and measure it per group.

TExplain explains a classifier that is given; this module makes one when
there is none (the demo trains a small CNN on a biased split) and fine-tunes
one later (mitigation). Accuracy is reported per group (class × background,
or whatever groups the data names), with the worst group beside the average,
because a shortcut shows in the worst group first.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from texplain.data.images import load_rgb
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError
from texplain.models.classifiers import Classifier, head_name, logits_of
from texplain.progress import tqdm
from texplain.training.config import ClassifierTrainConfig
from texplain.training.frozen_front import cut_inputs, front_is_a_chain, skipping, split_at, trained_modules
from texplain.training.schedule import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class TrainingHistory:
    """Per epoch run, the mean training loss and (with a held-out set) the held-out loss; the epoch kept (1-based)."""

    losses: list[float] = field(default_factory=list)
    held_out_losses: list[float] = field(default_factory=list)
    kept_epoch: int = 0

    def to_json(self) -> dict:
        return {"epochs": len(self.losses), "kept_epoch": self.kept_epoch,
                "losses": [round(x, 4) for x in self.losses], "held_out_losses": [round(x, 4) for x in self.held_out_losses]}


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
    held_out: tuple[Tensor, Tensor] | None = None,
    front_inputs: tuple[Tensor, Tensor] | None = None,
) -> TrainingHistory:
    """Train ``classifier`` (all of it, its last stages or its head) on pixels (N, 3, H, W) and labels (N,).

    With ``held_out`` (pixels (M, 3, H, W), labels (M,)) it stops early on
    their loss and keeps the best epoch (see :class:`ClassifierTrainConfig`).
    ``front_inputs``: the last stages' inputs for ``pixels`` and the held-out
    pixels, (N, ...) and (M, ...), where the caller has them
    (:func:`~.frozen_front.cut_inputs` of this classifier at
    :func:`~.frozen_front.last_stage`); used only when the last stages train
    from cached inputs, instead of computing them.
    The classifier is frozen and in eval mode again afterwards, ready to be
    explained; after head-only training its ``features_of`` still names the
    classifier its features come from.
    """
    config = config or ClassifierTrainConfig()
    if len(pixels) < 2:
        raise TexplainError("classifier training: need at least 2 images")
    device = torch.device(config.device)
    module = classifier.module.to(device).eval().requires_grad_(False)
    names, cut = trained_modules(module, config.trainable)
    tail, front = _tail(module, config.trainable, cut, pixels)
    cached = front_inputs is not None and bool(front)
    if tail is module and not front:
        inputs = pixels
    else:
        inputs = front_inputs[0] if cached else cut_inputs(module, cut, pixels, config.batch_size, progress)
    held = None
    if held_out is not None and len(held_out[1]):
        held_pixels, held_labels = held_out
        if inputs is pixels:
            held = (held_pixels, held_labels)
        else:
            held = (front_inputs[1] if cached else cut_inputs(module, cut, held_pixels, config.batch_size), held_labels)
    trained = [module.get_submodule(name) for name in names]
    for part in trained:
        part.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(_parameter_groups(module, trained, config), weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(pixels) // config.batch_size)
    scheduler = warmup_cosine(optimizer, max(1, steps // 10), steps)
    generator = torch.Generator().manual_seed(config.seed)
    history, best, since = TrainingHistory(), None, 0
    bar = tqdm(range(config.epochs), desc="train classifier", unit="epoch", disable=not progress)
    with skipping(module, front):
        for epoch in bar:
            order = torch.randperm(len(pixels), generator=generator)
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                index = order[start : start + config.batch_size]
                loss = nn.functional.cross_entropy(logits_of(tail(inputs[index].to(device))), labels[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(index)
            history.losses.append(total / len(pixels))
            bar.set_postfix(loss=f"{history.losses[-1]:.3f}")
            if held is None:
                continue
            history.held_out_losses.append(_loss(tail, trained, held, config.batch_size, device))
            if best is None or history.held_out_losses[-1] < min(history.held_out_losses[:-1]):
                best, since, history.kept_epoch = [copy.deepcopy(part.state_dict()) for part in trained], 0, epoch + 1
            else:
                since += 1
                if since >= config.patience:
                    break
        if best is not None:
            for part, state in zip(trained, best):
                part.load_state_dict(state)
    history.kept_epoch = history.kept_epoch or len(history.losses)
    module.eval().requires_grad_(False)
    classifier.features_of = classifier.feature_spec if config.trainable == "head" else ""
    return history


def _tail(module: nn.Module, trainable: str, cut: str | None, pixels: Tensor) -> tuple[nn.Module, list[str]]:
    """What each step runs, and the modules it skips: the head alone; the whole classifier with its frozen
    front swapped for identities (when that is exact, :func:`~.frozen_front.front_is_a_chain`); or the whole classifier."""
    if trainable == "head":
        return module.get_submodule(cut), []
    if cut is not None and front_is_a_chain(module, cut, pixels[:2]):
        return module, split_at(module, cut)[0]
    if cut is not None:
        log.info("fine-tuning from %s: the frozen part runs at every step", cut)
    return module, []


def _parameter_groups(module: nn.Module, trained: list[nn.Module], config: ClassifierTrainConfig) -> list[dict]:
    """AdamW's parameter groups: the head at ``lr``, the other trained weights at ``lr * backbone_lr``."""
    weights = [p for part in trained for p in part.parameters()]
    if config.backbone_lr == 1.0:
        return [{"params": weights, "lr": config.lr}]
    head = {id(p) for p in module.get_submodule(head_name(module)).parameters()}
    groups = [{"params": [p for p in weights if id(p) in head], "lr": config.lr},
              {"params": [p for p in weights if id(p) not in head], "lr": config.lr * config.backbone_lr}]
    return [g for g in groups if g["params"]]


def _loss(tail: nn.Module, trained: list[nn.Module], held: tuple[Tensor, Tensor], batch_size: int, device: torch.device) -> float:
    """Mean cross-entropy on the held-out inputs, the trained modules in eval mode (as the classifier is scored)."""
    for part in trained:
        part.eval()
    inputs, labels = held
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = logits_of(tail(inputs[start : start + batch_size].to(device)))  # (B, C)
            total += nn.functional.cross_entropy(logits, labels[start : start + batch_size].to(device), reduction="sum").item()
    for part in trained:
        part.train()
    return total / len(labels)


def predict(classifier: Classifier, pixels: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted class indices (N,) for pixels (N, 3, H, W)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            out.append(logits_of(classifier.module(pixels[start : start + batch_size].to(classifier.device))).argmax(-1).cpu())
    return torch.cat(out)
