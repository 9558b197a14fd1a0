"""Shared tiny, offline fixtures: a caption tokenizer and LM, a tiny ViT, a few images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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


def make_gpt2(vocab_size: int, n_embd: int = 32, seed: int = 0):
    """A two-layer GPT-2 with random weights, built from its config.

    With the default 0.02 initialisation every output is near-uniform whatever
    the input, so no prefix could make it say anything; larger weights make
    it a usable stand-in for a trained LM.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=n_embd, n_layer=2, n_head=2,
                        initializer_range=0.5)  # large weights: a prefix can steer the outputs
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="session")
def tiny_lm():
    from texplain.lm import FrozenLM

    tokenizer = make_tokenizer()
    return FrozenLM(make_gpt2(len(tokenizer)), tokenizer, spec="tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_lm_folder(tmp_path_factory, tiny_lm) -> Path:
    """The tiny LM saved as an ordinary Hugging Face folder."""
    folder = tmp_path_factory.mktemp("lm")
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    return folder


def tiny_vit(num_classes: int = 3):
    from texplain.classifiers import load_classifier

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
