"""A world built for localisation tests: a hand-set colour detector and a translator that ties colours to words.

The classifier turns pixels (B, 3, 32, 32) into a 4 x 4 map of [blueness,
redness] (grey is zero in both), so its features say exactly where the blue
is. :func:`train_words` teaches a translator on the tiny caption LM which
sentence goes with which picture; a few seconds suffice.
"""

from __future__ import annotations

import torch
from torch import nn

from texplain.data.captions import CaptionPair
from texplain.models.classifiers import Classifier
from texplain.models.translator import Translator, new_translator
from texplain.training.config import Phase, TrainConfig
from texplain.training.translator_training import train_translator

SIZE = 32
BLUE = torch.tensor([0.0, 0.1, 1.0])[:, None, None]
GREY = 0.5


class ColourGrid(nn.Module):
    """Pixels (B, 3, 32, 32) → a 4 x 4 map of [blueness, redness] → two logits; hand-set, nothing learned."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(SIZE // 4)
        self.colour = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.colour.weight.copy_(torch.tensor([[-1.0, -1.0, 2.0], [2.0, -1.0, -1.0]])[:, :, None, None])
            self.colour.bias.zero_()
            self.head.weight.copy_(torch.eye(2))
            self.head.bias.zero_()

    def forward(self, x):
        grid = self.act(self.colour(self.pool(x)))  # (B, 2, 4, 4)
        return self.head(grid.mean(dim=(2, 3)))  # (B, 2)


def colour_grid() -> Classifier:
    """The colour detector as a classifier whose feature layer is its 4 x 4 map."""
    return Classifier(ColourGrid(), lambda image: image, ["class_a", "class_b"], "colour-grid", "act")


class Store:
    """Named pictures' features, served as a feature store is to training."""

    def __init__(self, classifier: Classifier, pictures: dict[str, torch.Tensor]):
        self.folder = "in-memory"
        with torch.no_grad():
            features, _ = classifier.features_and_logits(torch.stack(list(pictures.values())))
        self.rows = dict(zip(pictures, features))

    def __contains__(self, path) -> bool:
        return str(path) in self.rows

    def load_all(self, paths):
        return torch.stack([self.rows[str(p)] for p in paths])

    def nbytes(self, images: int) -> int:
        return images * next(iter(self.rows.values())).numel() * 4


def train_words(classifier: Classifier, lm, pictures: dict[str, tuple[torch.Tensor, str]], folder) -> Translator:
    """A translator trained until each picture's features bring its caption."""
    torch.manual_seed(0)
    store = Store(classifier, {name: image for name, (image, _) in pictures.items()})
    pairs = [CaptionPair(name, caption) for name, (_, caption) in pictures.items() for _ in range(32)]
    translator = new_translator(classifier, lm, tuple(next(iter(store.rows.values())).shape), prefix_len=4, hidden=32)
    train_translator(translator, lm, store, [Phase("train", pairs, 30, lr=3e-3)], folder,
                     TrainConfig(batch_size=16, warmup_steps=5), progress=False)
    return translator.eval()
