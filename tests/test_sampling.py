"""Nucleus sampling from one shared prefix cache.

Tiny models built from configs with fixed seeds (no downloads). The reference
for the shared-cache sampler is a naive loop that, for every sample and every
token, runs the whole prefix and sentence through the model without a cache.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2_contingency, chisquare
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertLMHeadModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from texplain.errors import TexplainError
from texplain.generate.config import SamplingConfig
from texplain.generate.nucleus import nucleus_filter, sample_nucleus
from texplain.generate.sampling import sample_sentences, sample_token_ids
from texplain.generate.word_boundaries import count_token_words, word_start_mask
from texplain.models.lm import FrozenLM

EOS = "[EOS]"
WORDS = [f"w{i}" for i in range(14)]
PIECES = ["##a", "##b", "##c", "##d"]
WIDTH = 32


def word_tokenizer(pieces: bool = False) -> PreTrainedTokenizerFast:
    """Word-level vocabulary (every token is a word) or WordPiece with '##' continuations."""
    vocab = {EOS: 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    if pieces:
        vocab |= {p: len(vocab) + i for i, p in enumerate(PIECES)}
        backend = Tokenizer(models.WordPiece(vocab, unk_token=EOS))
        backend.decoder = decoders.WordPiece()
    else:
        backend = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS)


def tiny_gpt2(vocab: int, seed: int = 0, init: float = 0.02) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=WIDTH, n_head=2, n_positions=96, vocab_size=vocab,
        bos_token_id=0, eos_token_id=0, initializer_range=init,
    )
    return GPT2LMHeadModel(config)


def tiny_bert(vocab: int, seed: int = 0) -> BertLMHeadModel:
    torch.manual_seed(seed)
    config = BertConfig(
        num_hidden_layers=2, hidden_size=WIDTH, num_attention_heads=2, intermediate_size=64,
        vocab_size=vocab, max_position_embeddings=96, is_decoder=True,
    )
    return BertLMHeadModel(config)


def tiny_llama(vocab: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        num_hidden_layers=2, hidden_size=WIDTH, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=vocab, max_position_embeddings=96,
    )
    return LlamaForCausalLM(config)


def prefix(seed: int, k: int = 4, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(k, WIDTH, generator=torch.Generator().manual_seed(seed))


def multinomial_draw(logits: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """The textbook nucleus draw: filter, renormalise, ``torch.multinomial``."""
    return torch.multinomial(torch.softmax(nucleus_filter(logits, top_p), dim=-1), 1, generator=generator).squeeze(1)


def naive_sample(
    lm: FrozenLM, prefix: torch.Tensor, config: SamplingConfig, generator: torch.Generator, draw=multinomial_draw
) -> list[list[int]]:
    """Reference sampler: one sample at a time, the full sequence through the model at every token.

    Words are counted on the decoded text, independently of the sampler's token tables.
    """
    budget = config.token_budget
    samples = []
    with torch.inference_mode():
        for _ in range(config.num_samples):
            ids: list[int] = []
            for _ in range(budget):
                tokens = lm.embed_tokens(torch.tensor(ids, dtype=torch.long, device=lm.device))
                inputs = torch.cat([prefix, tokens])[None]
                logits = lm.model(inputs_embeds=inputs, use_cache=False).logits[:, -1].float() / config.temperature
                if decoded_words(lm.tokenizer, ids) < config.min_words:
                    logits[:, lm.eos_token_id] = float("-inf")
                token = int(draw(logits, config.top_p, generator))
                if token == lm.eos_token_id or decoded_words(lm.tokenizer, [*ids, token]) > config.max_words:
                    break
                ids.append(token)
            samples.append(ids)
    return samples


def decoded_words(tokenizer, ids: list[int]) -> int:
    """Whitespace-separated chunks of the decoded text that hold a letter or digit."""
    return sum(any(c.isalnum() for c in chunk) for chunk in tokenizer.decode(ids, skip_special_tokens=True).split())


def nucleus_reference(probs: list[float], top_p: float) -> set[int]:
    """Smallest set of most probable ids (ties: lower id first) with mass >= top_p, in plain Python."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    kept, mass = set(), 0.0
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= top_p:
            break
    return kept


def kept(logits: torch.Tensor, top_p: float) -> set[int]:
    """Ids (of a 1-D logits vector) that survive the filter."""
    return set(torch.nonzero(torch.isfinite(nucleus_filter(logits, top_p))).flatten().tolist())


# --- nucleus filter -------------------------------------------------------


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [(0.3, {1}), (0.45, {1}), (0.65, {1, 3}), (0.79, {1, 3}), (0.81, {1, 3, 0}), (0.97, {1, 3, 0, 2}), (1.0, {0, 1, 2, 3})],
)
def test_nucleus_keeps_smallest_set_reaching_p(top_p: float, expected: set[int]) -> None:
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()
    assert kept(logits, top_p) == expected


def test_nucleus_breaks_ties_by_lower_id() -> None:
    logits = torch.tensor([0.2, 0.4, 0.2, 0.2]).log()
    assert kept(logits, 0.5) == {1, 0}
    assert kept(logits, 0.7) == {1, 0, 2}
    assert torch.equal(nucleus_filter(logits, 0.5), nucleus_filter(logits.clone(), 0.5))


def test_nucleus_matches_python_reference_on_random_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 5, 50, generator=generator)  # (..., V) with two batch dims
    for top_p in (0.1, 0.5, 0.9, 0.95):
        filtered = nucleus_filter(logits, top_p)
        assert filtered.shape == logits.shape
        for row_logits, row_filtered in zip(logits.reshape(-1, 50), filtered.reshape(-1, 50)):
            probs = torch.softmax(row_logits.double(), -1).tolist()
            assert set(torch.nonzero(torch.isfinite(row_filtered)).flatten().tolist()) == nucleus_reference(probs, top_p)
            finite = torch.isfinite(row_filtered)
            assert torch.equal(row_filtered[finite], row_logits[finite])


def test_nucleus_p1_is_identity_and_top_token_always_kept() -> None:
    logits = torch.tensor([[0.0, float("-inf"), -30.0, 2.0]])
    assert torch.equal(nucleus_filter(logits, 1.0), logits)
    assert kept(logits[0], 1e-6) == {3}


# --- the nucleus draw -------------------------------------------------------


@pytest.mark.parametrize("top_p", [0.5, 0.7, 0.8, 0.95, 1.0])
def test_sample_nucleus_follows_the_filtered_distribution(top_p: float) -> None:
    """Goodness of fit of 20,000 draws against softmax(nucleus_filter(logits)), ties included."""
    probs = torch.tensor([0.02, 0.3, 0.1, 0.1, 0.25, 0.05, 0.1, 0.08])
    logits = probs.log().expand(20_000, -1)  # (B, V): every row the same distribution
    tokens = sample_nucleus(logits, top_p, torch.Generator().manual_seed(0))
    expected = torch.softmax(nucleus_filter(logits[0], top_p).double(), dim=-1)
    observed = torch.bincount(tokens, minlength=8).double()
    assert observed[expected == 0].sum() == 0
    inside = expected > 0
    assert chisquare(observed[inside], 20_000 * expected[inside] / expected[inside].sum()).pvalue > 1e-3
    if top_p == 0.5:
        assert set(torch.nonzero(observed).flatten().tolist()) == {1, 4}
    if top_p == 0.7:  # three tokens tie at 0.1 on the edge: the two with lower ids are in
        assert set(torch.nonzero(observed).flatten().tolist()) == {1, 4, 2, 3}


def test_sample_nucleus_never_leaves_the_nucleus_and_is_seeded() -> None:
    logits = 2 * torch.randn(300, 500, generator=torch.Generator().manual_seed(1))  # (B, V)
    for top_p in (0.3, 0.9, 0.95):
        tokens = sample_nucleus(logits, top_p, torch.Generator().manual_seed(2))
        assert torch.isfinite(nucleus_filter(logits, top_p)[torch.arange(300), tokens]).all()
        assert torch.equal(tokens, sample_nucleus(logits, top_p, torch.Generator().manual_seed(2)))


def test_sample_nucleus_falls_back_when_the_nucleus_is_rarely_hit() -> None:
    """Flat rows and a tiny p: the nucleus is the single best token, which rejection draws almost never hit."""
    logits = torch.zeros(50, 1000)
    logits[torch.arange(50), torch.arange(50) * 7] = 1e-3  # one token per row just above the rest
    tokens = sample_nucleus(logits, 1e-4, torch.Generator().manual_seed(0))
    assert torch.equal(tokens, torch.arange(50) * 7)
    ties = sample_nucleus(torch.zeros(4, 1000), 1e-4, torch.Generator().manual_seed(0))
    assert ties.tolist() == [0, 0, 0, 0]  # among equals the lowest id ranks first


# --- word starts ------------------------------------------------------------


def test_word_start_mask_per_scheme() -> None:
    level = word_tokenizer()
    assert word_start_mask(level).tolist() == [False] + [True] * len(WORDS)
    piece = word_tokenizer(pieces=True)
    mask = word_start_mask(piece)
    assert mask[piece.convert_tokens_to_ids("w3")] and not mask[piece.convert_tokens_to_ids("##b")]
    assert not mask[piece.eos_token_id]


def test_word_start_mask_sentencepiece_markers_and_byte_tokens() -> None:
    vocab = {"</s>": 0, "\u2581a": 1, "\u2581dog": 2, "gy": 3, "<0x0A>": 4, "\u2581.": 5, "<0xE2>": 6, "dog": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    assert word_start_mask(tokenizer).tolist() == [False, True, True, False, False, False, False, False]
    assert count_token_words(tokenizer, [1, 2, 3, 5]) == 2  # "a doggy ."
    assert count_token_words(tokenizer, [2, 4, 7, 6, 7]) == 2  # "dog\ndog?dog": the newline opens a word, U+FFFD does not


def test_word_start_mask_byte_level_bpe() -> None:
    from texplain.training.caption_lm import train_caption_tokenizer

    tokenizer = train_caption_tokenizer(["a dog runs on the grass .", "a black dog jumps ."] * 5, vocab_size=300)
    mask = word_start_mask(tokenizer)
    ids = tokenizer("a black dog jumps .", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "a" and not mask[ids[0]]  # no 'Ġ': it begins a word only at the sentence start
    assert [bool(mask[i]) for i in ids[1:]] == [t[1:].isalnum() for t in tokens[1:]]
    assert not mask[tokenizer.convert_tokens_to_ids("\u0120.")]
    assert not mask[tokenizer.eos_token_id]


@pytest.mark.parametrize(
    "text",
    ["a black dog jumps .", "a dog\nruns\n\non the grass", '"Two" dogs (big ones) run ...', "dogs .run  fast", "\u00e9t\u00e9 caf\u00e9 \u2014 ok"],
)
def test_count_token_words_agrees_with_the_decoded_text(text: str) -> None:
    from texplain.training.caption_lm import train_caption_tokenizer

    tokenizer = train_caption_tokenizer(["a dog runs on the grass .", "a black dog jumps .\n"] * 5, vocab_size=300)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert count_token_words(tokenizer, ids) == decoded_words(tokenizer, ids)


# --- config ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"top_p": 0.0}, {"top_p": 1.5}, {"min_words": 31}, {"temperature": 0.0}, {"num_samples": 0}, {"batch_size": 0},
     {"max_words": 0, "min_words": 0}, {"max_tokens": 10}],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(TexplainError):
        SamplingConfig(**kwargs)


def test_bad_prefix_shape_is_a_one_line_error() -> None:
    tokenizer = word_tokenizer()
    lm = FrozenLM(tiny_gpt2(len(tokenizer)), tokenizer)
    with pytest.raises(TexplainError, match="prefix must have shape"):
        sample_sentences(lm, torch.zeros(1, 4, WIDTH), SamplingConfig(num_samples=2))


# --- shared cache vs the naive loop ----------------------------------------


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_bert, tiny_llama], ids=["gpt2", "bert", "llama"])
def test_batch_of_one_reproduces_naive_loop_token_for_token(build) -> None:
    """With one sample per batch both samplers draw the same random numbers: equal caches give equal tokens."""
    tokenizer = word_tokenizer(pieces=True)
    lm = FrozenLM(build(len(tokenizer)), tokenizer)
    config = SamplingConfig(num_samples=4, batch_size=1, min_words=2, max_words=5, top_p=0.9, temperature=0.7)
    p = prefix(1)
    cached = sample_token_ids(lm, p, config, torch.Generator().manual_seed(3))
    naive = naive_sample(lm, p, config, torch.Generator().manual_seed(3), draw=sample_nucleus)
    assert cached == naive
    assert all(len(ids) >= 2 for ids in cached)


def first_tokens(samples: list[list[int]], position: int, vocab: int) -> list[int]:
    counts = [0] * vocab
    for ids in samples:
        counts[ids[position]] += 1
    return counts


def chi_square_p(a: list[int], b: list[int]) -> float:
    table = [[x, y] for x, y in zip(a, b) if x + y > 0]
    return chi2_contingency(list(zip(*table))).pvalue


def test_shared_prefix_draws_from_the_naive_distribution() -> None:
    """Chi-square on first- and second-token counts: same prefix agrees, another prefix is told apart."""
    tokenizer = word_tokenizer()
    vocab = len(tokenizer)
    lm = FrozenLM(tiny_gpt2(vocab, seed=1, init=0.3), tokenizer)
    config = SamplingConfig(num_samples=1000, batch_size=400, min_words=2, max_words=2, top_p=0.95, temperature=3.0)
    p, other = prefix(11), prefix(12)
    cached = sample_token_ids(lm, p, config, torch.Generator().manual_seed(0))
    naive = naive_sample(lm, p, config, torch.Generator().manual_seed(1))
    naive_other = naive_sample(lm, other, config, torch.Generator().manual_seed(2))
    assert all(len(ids) == 2 for ids in cached + naive)
    for position in (0, 1):
        ours = first_tokens(cached, position, vocab)
        assert sum(c > 0 for c in ours) >= 8  # the distribution is spread, so the test has power
        assert chi_square_p(ours, first_tokens(naive, position, vocab)) > 1e-3
        assert chi_square_p(ours, first_tokens(naive_other, position, vocab)) < 1e-6


def test_every_token_lies_in_the_true_nucleus_with_rows_finishing_apart() -> None:
    """Rows end at different steps (EOS is likely), so the batch is compacted; no token may leave the nucleus."""
    tokenizer = word_tokenizer(pieces=True)
    model = tiny_bert(len(tokenizer), seed=2)
    with torch.no_grad():
        model.cls.predictions.bias[tokenizer.eos_token_id] = 1.5
        model.bert.embeddings.word_embeddings.weight.mul_(10)  # peaked distributions: small nuclei
    lm = FrozenLM(model, tokenizer)
    config = SamplingConfig(num_samples=120, batch_size=60, min_words=2, max_words=12, top_p=0.5)
    p = prefix(5, scale=3.0)
    samples = sample_token_ids(lm, p, config, torch.Generator().manual_seed(0))
    assert len({len(ids) for ids in samples}) > 4
    k = p.shape[0]
    sizes = []
    with torch.inference_mode():
        for ids in samples:
            tokens = torch.tensor(ids, dtype=torch.long)
            inputs = torch.cat([p, lm.embed_tokens(tokens)])[None]
            logits = lm.model(inputs_embeds=inputs).logits[0, k - 1 : k - 1 + len(ids)].float()  # (T, V)
            words_before = torch.tensor([decoded_words(tokenizer, ids[:t]) for t in range(len(ids))])  # (T,)
            logits[words_before < config.min_words, lm.eos_token_id] = float("-inf")
            nucleus = torch.isfinite(nucleus_filter(logits, config.top_p))  # (T, V)
            assert nucleus[torch.arange(len(ids)), tokens].all()
            sizes.append(nucleus.sum(1).float().mean())
    assert torch.stack(sizes).mean() < len(tokenizer) / 4  # nuclei are small: a misplaced cache row would show


# --- lengths, seeds, architectures -----------------------------------------


def test_word_limits_are_honoured() -> None:
    tokenizer = word_tokenizer(pieces=True)
    model = tiny_bert(len(tokenizer), seed=3)
    with torch.no_grad():
        model.cls.predictions.bias[tokenizer.eos_token_id] = 2.0
    lm = FrozenLM(model, tokenizer)
    config = SamplingConfig(num_samples=200, batch_size=64, min_words=3, max_words=7, max_tokens=60)
    sentences = sample_sentences(lm, prefix(4), config)
    counts = [len(s.split()) for s in sentences]
    assert min(counts) >= 3 and max(counts) <= 7
    assert {3, 7} <= set(counts)  # some end as soon as allowed, some are cut at the limit
    assert any("##" not in s and any(p[2:] in s for p in PIECES) for s in sentences)  # pieces joined into words


def test_same_seed_same_sentences_and_different_seed_differs() -> None:
    tokenizer = word_tokenizer()
    lm = FrozenLM(tiny_gpt2(len(tokenizer)), tokenizer)
    p = prefix(0)
    a = sample_sentences(lm, p, SamplingConfig(num_samples=20, batch_size=8, min_words=3, max_words=6, seed=5))
    b = sample_sentences(lm, p, SamplingConfig(num_samples=20, batch_size=8, min_words=3, max_words=6, seed=5))
    c = sample_sentences(lm, p, SamplingConfig(num_samples=20, batch_size=8, min_words=3, max_words=6, seed=6))
    assert a == b
    assert a != c
    assert len(a) == 20 and all(3 <= len(s.split()) <= 6 for s in a)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_bert, tiny_llama], ids=["gpt2", "bert", "llama"])
def test_architectures_sample_full_sentences(build) -> None:
    tokenizer = word_tokenizer()
    lm = FrozenLM(build(len(tokenizer)), tokenizer)
    sentences = sample_sentences(lm, prefix(2), SamplingConfig(num_samples=30, batch_size=16, min_words=4, max_words=8))
    assert len(sentences) == 30
    assert all(4 <= len(s.split()) <= 8 and EOS not in s for s in sentences)
