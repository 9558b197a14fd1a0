"""Word contexts: which words a caption's context may hold, how slots are drawn, and what a slot embeds."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import make_tokenizer
from texplain.errors import TexplainError
from texplain.training.config import ContextRecipe
from texplain.training.word_context import (
    MIX,
    NULL,
    WordTable,
    caption_words,
    draw_context,
    sibling_words,
    word_context,
)


def test_a_captions_context_holds_its_siblings_words_never_its_own():
    group = ["A dog runs on the grass .", "Two dogs play .", "A puppy sits in the snow ."]
    assert caption_words(group[0]) == ["dog", "run", "grass"]
    siblings = sibling_words(group)
    assert siblings[0] == ["two", "dog", "play", "puppy", "sit", "snow"]
    assert "grass" not in siblings[0] and "grass" in siblings[1]
    assert sibling_words(["A cat sleeps ."]) == [["cat", "sleep"]]  # alone: its own words


def test_drawn_contexts_have_k_slots_of_the_images_words_or_null():
    rng = random.Random(0)
    recipe = ContextRecipe(slots=4, empty=0.25, drop=0.2, mix=0.3, noise=0.0)
    words = [3, 5, 7]
    empty = 0
    for _ in range(400):
        indices, weights = draw_context(words, recipe, vocabulary=10, rng=rng)
        assert len(indices) == len(weights) == 4 and all(len(s) == len(w) == MIX for s, w in zip(indices, weights))
        assert all(abs(sum(w) - 1.0) < 1e-9 for w in weights)
        assert {i for slot in indices for i in slot} <= {*words, NULL}
        empty += all(slot[0] == NULL for slot in indices)
    assert 0.15 < empty / 400 < 0.45  # the empty context about a quarter of the time, plus short draws


def test_a_plain_context_is_the_first_words_then_null():
    indices, weights = word_context([4, 2], slots=3)
    assert [slot[0] for slot in indices] == [4, 2, NULL] and all(w[0] == 1.0 for w in weights)


def test_a_slot_embeds_the_mean_of_its_words_tokens_and_mixes_linearly():
    tokenizer = make_tokenizer()
    table = WordTable(["dog", "water"], tokenizer)
    embedding = torch.nn.Embedding(len(tokenizer), 8)
    vectors = table.embeddings(embedding)  # (3, 8)
    dog = tokenizer(" dog", add_special_tokens=False)["input_ids"]
    assert torch.allclose(vectors[0], embedding(torch.tensor(dog)).mean(0))
    assert torch.allclose(vectors[2], embedding(torch.tensor(tokenizer.eos_token_id)))  # the null slot
    words = torch.tensor([[[0, 1, NULL], [NULL, NULL, NULL]]])
    weights = torch.tensor([[[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]]])
    slots = table.slots(embedding, words, weights)  # (1, 2, 8)
    assert torch.allclose(slots[0, 0], 0.25 * vectors[0] + 0.75 * vectors[1], atol=1e-6)
    assert torch.allclose(slots[0, 1], vectors[2])


def test_slot_gradients_repeat_exactly_on_two_threads():
    """A seeded caption LM must repeat: the slots' backward may not depend on how threads accumulate."""
    tokenizer = make_tokenizer()
    table = WordTable([f"word{i}" for i in range(60)], tokenizer)  # the demo LM's table holds 61 words
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(len(table), (256, 8, 6), generator=generator)  # (B, K, M): each word many times
    weights = torch.rand(256, 8, 6, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(5):
            torch.manual_seed(0)
            embedding = torch.nn.Embedding(len(tokenizer), 64)
            table.slots(embedding, words, weights).pow(2).sum().backward()
            grads.append(embedding.weight.grad)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_recipe_rejects_bad_values():
    with pytest.raises(TexplainError):
        ContextRecipe(slots=-1)
    with pytest.raises(TexplainError):
        ContextRecipe(mix=1.5)
