"""Shared tiny, offline fixtures: a caption tokenizer and LM, a tiny ViT, a few images."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see texplain.cli.run

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from texplain.generate.config import SamplingConfig  # noqa: E402

# Tiny models run faster on one thread, and a busy second core cannot stall them.
torch.set_num_threads(1)

CAPTIONS = [
    "a small red bird standing on green grass",
    "a dog running on the beach near the water",
    "two fish swimming in blue water",
    "a car driving on a wet road",
    "a man riding a bike down the street",
    "a boat on the water under a blue sky",
    "a black dog plays with a ball in the snow",
    "a girl in a pink dress sits on the grass",
]


def make_tokenizer(texts: list[str] = CAPTIONS, vocab_size: int = 200):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers (no download)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_lm_folder(tmp_path_factory) -> Path:
    """A two-layer caption LM pretrained on :data:`CAPTIONS`, saved as a Hugging Face folder.

    Pretrained rather than random: a random LM gives near-uniform outputs
    whatever its prefix, so nothing could be learned through it.
    """
    from texplain.training.caption_lm import pretrain_caption_lm
    from texplain.training.config import CaptionLMConfig

    folder = tmp_path_factory.mktemp("lm") / "caption-lm"
    config = CaptionLMConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=300, epochs=40, batch_size=16, lr=1e-2,
                           dev_fraction=0.0, n_positions=64, max_tokens=32)
    return pretrain_caption_lm(CAPTIONS * 20, folder, config, progress=False)


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_folder):
    from texplain.models.lm import load_lm

    return load_lm(str(tiny_lm_folder))


def tiny_vit(num_classes: int = 3):
    from texplain.models.classifiers import load_classifier

    torch.manual_seed(0)
    return load_classifier("timm:test_vit", pretrained=False, num_classes=num_classes)


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    """Eight small random RGB images (JPEG and PNG)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        array = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        path = folder / f"img{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


TINY_DEMO = dict(caption_images=150, train_images=90, test_images=45, explained_train=15,
                 sampling=SamplingConfig(num_samples=3), classifier="vit", pretrain_epochs=0, classifier_epochs=1, lm_epochs=1,
                 translator_epochs=1)
"""The ``tiny_demo`` fixture's settings: a whole demo at toy sizes, with the small ViT (its tokens exercise the token path)."""


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A whole demo run at toy sizes: world, classifier, LM, features, translator, summary.

    Later steps (dataset explanation, evaluation, mitigation) test on it: every
    artifact is real, only small. Its summary's figures mean little at this size.
    """
    from texplain.demo.config import DemoConfig
    from texplain.demo.run import run_demo

    out = tmp_path_factory.mktemp("demo")
    run_demo(DemoConfig(out=out, **TINY_DEMO), progress=False)
    return out
