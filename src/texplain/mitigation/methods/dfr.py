"""DFR, Deep Feature Reweighting (Kirichenko et al. 2023): the last layer retrained from scratch on balanced held-out data.

The features stay the classifier's; the head is refitted on the held-out
part of train (never on test), balanced by group where the data names
groups (the paper's DFR, which uses the group labels TExplain never sees)
and by class where it does not (BAR: class-balanced DFR, named so in the
table). As in the paper, the features are standardised, a logistic
regression is fitted (``dfr_steps`` full-batch steps) on each of ``dfr_subsets`` balanced subsets drawn with
the seed (every group cut to the smallest group's size), and their weights
are averaged; the standardisation is folded into the new head. The paper's
L1 penalty and its tuning on group-labelled validation data are left out:
AdamW's weight decay regularises instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from texplain.errors import TexplainError
from texplain.mitigation.bench import Bench
from texplain.models.classifiers import Classifier, head_name
from texplain.training.frozen_front import cut_inputs


class DFR:
    """Refit the last layer on balanced held-out features."""

    name = "dfr"

    def __init__(self) -> None:
        self.label = "DFR"
        self.features: Tensor | None = None

    def prepare(self, bench: Bench) -> dict:
        if not bench.held:
            raise TexplainError("DFR: retrains on the held-out part of train; give a holdout above 0")
        self.label = "DFR (group-balanced, uses group labels)" if bench.has_groups else "DFR (class-balanced; no group labels)"
        module = bench.classifier.module
        self.head = head_name(module)
        self.features = cut_inputs(module, self.head, bench.train_pixels[bench.held], 64).flatten(1)  # (M, D)
        groups = [bench.train_groups[i] for i in bench.held]
        members = {g: [k for k, x in enumerate(groups) if x == g] for g in sorted(set(groups))}
        self.members = members
        return {"dfr_balanced_by": "group" if bench.has_groups else "class",
                "dfr_per_group": min(len(m) for m in members.values())}

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        generator = torch.Generator().manual_seed(seed)
        labels = bench.train_labels[bench.held]
        size = min(len(m) for m in self.members.values())
        mean, std = self.features.mean(0), self.features.std(0).clamp(min=1e-6)  # (D,)
        standard = (self.features - mean) / std  # (M, D)
        weights, biases = [], []
        for _ in range(bench.config.dfr_subsets):
            index = torch.tensor([m[j] for m in self.members.values()
                                  for j in torch.randperm(len(m), generator=generator)[:size].tolist()])
            linear = fit_logistic(standard[index], labels[index], len(bench.classifier.class_names), bench.config.dfr_steps,
                                  bench.config.dfr_lr, generator)
            weights.append(linear.weight.detach())
            biases.append(linear.bias.detach())
        weight, bias = torch.stack(weights).mean(0), torch.stack(biases).mean(0)  # (C, D), (C,)
        classifier = bench.load()
        head = classifier.module.get_submodule(self.head)
        with torch.no_grad():
            head.weight.copy_(weight / std)
            head.bias.copy_(bias - (weight * mean / std).sum(1))
        return classifier, {"fine_tuned_on": size * len(self.members), "subsets": bench.config.dfr_subsets}


def fit_logistic(features: Tensor, labels: Tensor, classes: int, steps: int, lr: float, generator: torch.Generator) -> nn.Linear:
    """A multinomial logistic regression on features (n, D) and labels (n,): ``steps`` full-batch AdamW steps."""
    linear = nn.Linear(features.shape[1], classes)
    with torch.no_grad():
        linear.weight.normal_(0.0, 0.01, generator=generator)
        linear.bias.zero_()
    optimizer = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(linear(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return linear
