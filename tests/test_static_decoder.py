"""The static decoder (the GPU path), run on the CPU: its step eagerly, its draw against the sorted definition.

On CUDA the decoder's step (``StaticDecoder.forward``) is captured as a CUDA
graph and replayed; here the same function runs eagerly, so everything but
the capture itself is checked: the static cache with a position per row, rows
refilled in place, words and limits counted on the device, the top-k nucleus,
and that the host looks only every few steps.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from test_sampling import PIECES, WIDTH, decoded_words, prefix, tiny_bert, tiny_gpt2, tiny_llama, word_tokenizer
from texplain.errors import TexplainError
from texplain.generate import static_decoder
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.device_plan import EAGER_ROWS, decode_plan, rows_that_fit
from texplain.generate.explain import explain_features, explain_stream
from texplain.generate.nucleus import fast_nucleus, inverse_nucleus, nucleus_filter, sample_nucleus
from texplain.generate.sampling import sample_rows, sample_token_ids
from texplain.generate.static_decoder import CHECK_EVERY, StaticDecoder
from texplain.models.lm import FrozenLM
from texplain.text.config import WordConfig


def static(**kwargs) -> SamplingConfig:
    return SamplingConfig(decoding="static", **kwargs)


def tied_probs(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """Probabilities (rows, vocab) of every shape the nucleus meets: peaked, flat, and rounded into ties."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=generator) * (0.3 + 4 * torch.rand(rows, 1, generator=generator))
    logits[::3] = (logits[::3] * 2).round() / 2  # many exact ties, on the nucleus's edge too
    logits[1::7] = 0.0  # flat rows: every token ties
    logits[2::5, 3] = float("-inf")  # a forbidden token (end-of-sentence before min_words)
    return torch.softmax(logits, dim=-1)


# --- the top-k nucleus against the sorted definition ------------------------------------------


@pytest.mark.parametrize("top_p", [0.2, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("candidates", [(1,), (8,), (40,), (8, 40), (4, 16, 64), (500,)])
def test_fast_nucleus_gives_the_whole_sorts_token(top_p, candidates) -> None:
    """For the same uniforms the top-k path and the whole sort pick the same token, ties included."""
    probs = tied_probs(400, 120, seed=len(candidates) + int(100 * top_p))
    uniforms = torch.rand(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = inverse_nucleus(probs, top_p, uniforms)
    tokens, passed = fast_nucleus(probs, top_p, uniforms, candidates)
    assert torch.equal(tokens, expected)
    assert torch.isfinite(nucleus_filter(probs.log(), top_p)[torch.arange(400), tokens]).all()
    assert passed.shape == (len(candidates),)
    assert passed[0] > 0 if candidates[0] < 120 else passed[0] == 0  # flat rows go on, unless all are candidates
    exact, _ = fast_nucleus(probs, top_p, uniforms, candidates, capacities=passed.tolist())
    assert torch.equal(exact, expected)  # capacities that just hold the rows are enough


def test_fast_nucleus_reports_rows_beyond_capacity() -> None:
    probs = tied_probs(200, 120, seed=3)
    uniforms = torch.rand(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, passed = fast_nucleus(probs, 0.95, uniforms, (8,))
    tokens, again = fast_nucleus(probs, 0.95, uniforms, (8,), capacities=[int(passed[0]) - 1])
    assert torch.equal(again, passed) and again[0] > int(passed[0]) - 1  # the caller can tell
    only = torch.zeros(200, dtype=torch.bool)
    only[:10] = True
    _, counted = fast_nucleus(probs, 0.95, uniforms, (8,), rows=only)
    assert counted[0] <= 10  # rows outside ``rows`` never go on


def test_inverse_nucleus_follows_the_filtered_distribution_and_the_check_has_power() -> None:
    """Chi-square of 40,000 draws per row against softmax(nucleus_filter): p-values that a wrong nucleus cannot reach."""
    base = torch.tensor([0.02, 0.3, 0.1, 0.1, 0.25, 0.05, 0.1, 0.08])
    for top_p, larger in ((0.5, 0.7), (0.7, 0.8), (0.95, 0.99)):
        probs = base.expand(40_000, -1)
        uniforms = torch.rand(40_000, generator=torch.Generator().manual_seed(int(top_p * 10)), dtype=torch.float64)
        tokens, _ = fast_nucleus(probs, top_p, uniforms, (3,))
        observed = torch.bincount(tokens, minlength=8).double()
        expected = torch.softmax(nucleus_filter(base.log(), top_p).double(), dim=-1)
        assert observed[expected == 0].sum() == 0
        inside = expected > 0
        assert chisquare(observed[inside], 40_000 * expected[inside]).pvalue > 1e-3
        wrong = torch.softmax(nucleus_filter(base.log(), larger).double(), dim=-1)  # one or two more tokens
        assert int((wrong > 0).sum()) > int(inside.sum())
        assert chisquare(observed[wrong > 0], 40_000 * wrong[wrong > 0]).pvalue < 1e-9  # a wrong nucleus is caught


def test_fast_nucleus_at_p_one_draws_the_whole_distribution() -> None:
    base = torch.tensor([0.02, 0.3, 0.1, 0.1, 0.25, 0.05, 0.1, 0.08])
    uniforms = torch.rand(40_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tokens, passed = fast_nucleus(base.expand(40_000, -1), 1.0, uniforms)
    observed = torch.bincount(tokens, minlength=8).double()
    assert chisquare(observed, 40_000 * base.double()).pvalue > 1e-3 and int(passed.sum()) == 0
    assert observed[0] > 600  # the least probable token, out of every nucleus below p = 0.98, about 800 times


def test_fast_and_reference_draws_agree_on_a_table_of_logits() -> None:
    """Token frequencies of the fast draw and of the rejection draw (CPU) on the same rows: one distribution."""
    probs = tied_probs(12, 60, seed=7)  # (12, V): peaked, flat, tied rows
    draws = 6_000
    table = probs.repeat_interleave(draws, dim=0)  # (12 * draws, V)
    uniforms = torch.rand(table.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    fast, _ = fast_nucleus(table, 0.9, uniforms, (4, 16))
    reference = sample_nucleus(table.log(), 0.9, torch.Generator().manual_seed(6))
    other = sample_nucleus(table.log(), 0.8, torch.Generator().manual_seed(7))
    for row in range(12):
        part = slice(row * draws, (row + 1) * draws)
        a, b, c = (torch.bincount(t[part], minlength=60) for t in (fast, reference, other))
        seen = (a + b) > 0
        assert chi2_contingency(torch.stack([a[seen], b[seen]]).numpy()).pvalue > 1e-4
        if not torch.equal(torch.isfinite(nucleus_filter(probs[row].log(), 0.9)),
                           torch.isfinite(nucleus_filter(probs[row].log(), 0.8))):
            seen = (a + c) > 0
            assert chi2_contingency(torch.stack([a[seen], c[seen]]).numpy()).pvalue < 1e-6  # a wrong p is caught


# --- the decoder against a naive loop -------------------------------------------------------


def naive_static(lm: FrozenLM, p: torch.Tensor, config: SamplingConfig, uniforms: torch.Tensor) -> list[list[int]]:
    """Each sentence alone, the whole sequence through the model at every token, drawn at its own uniforms."""
    budget = config.token_budget
    samples = []
    with torch.inference_mode():
        for row in uniforms:
            ids: list[int] = []
            for step in range(budget):
                tokens = lm.embed_tokens(torch.tensor(ids, dtype=torch.long))
                logits = lm.model(inputs_embeds=torch.cat([p, tokens])[None]).logits[:, -1].float() / config.temperature
                if decoded_words(lm.tokenizer, ids) < config.min_words:
                    logits[:, lm.eos_token_id] = float("-inf")
                token = int(inverse_nucleus(torch.softmax(logits, -1), config.top_p, row[step : step + 1]))
                if token == lm.eos_token_id or decoded_words(lm.tokenizer, [*ids, token]) > config.max_words:
                    break
                ids.append(token)
            samples.append(ids)
    return samples


def eos_prone(build, seed: int = 2, bias: float = 1.5) -> FrozenLM:
    """A tiny LM in float64 whose sentences end at very different lengths (rows finish apart and are refilled)."""
    tokenizer = word_tokenizer(pieces=True)
    model = build(len(tokenizer), seed=seed).double()
    head = model.get_output_embeddings()
    if head.bias is None:
        head.bias = torch.nn.Parameter(torch.zeros(len(tokenizer), dtype=torch.float64))
    with torch.no_grad():
        head.weight[tokenizer.eos_token_id] = 0.0
        head.bias[tokenizer.eos_token_id] = bias
    return FrozenLM(model, tokenizer)


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_bert, tiny_llama], ids=["gpt2", "bert", "llama"])
def test_static_decoder_reproduces_the_naive_loop_token_for_token(build) -> None:
    """Three rows for twelve sentences: rows are refilled in place, each at its own position, as each sentence alone."""
    lm = eos_prone(build)
    config = static(num_samples=12, batch_size=3, min_words=1, max_words=6, top_p=0.9, temperature=0.8, max_tokens=10)
    p = prefix(3).double()
    ours = sample_token_ids(lm, p, config, torch.Generator().manual_seed(4))
    uniforms = torch.rand((12, config.token_budget), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert ours == naive_static(lm, p, config, uniforms)
    assert len({len(ids) for ids in ours}) >= 3  # sentences of different lengths shared the rows


def test_step_gives_each_row_the_logits_of_its_own_sequence() -> None:
    """The captured function, run eagerly: rows at different positions, one refilled, against a full forward each."""
    lm = eos_prone(tiny_llama)
    p = torch.stack([prefix(1).double(), prefix(2).double()])  # (2, P, d)
    config = static(num_samples=1)
    plan = decode_plan(lm, config, p.shape[1], 8)
    with torch.inference_mode():
        keys, values, first = static_decoder.encode_prefix(lm, p)
        decoder = StaticDecoder(lm, lm.model, 3, keys, 8, graph=False)
        assert plan.graph is False
        for layer, k, v in zip(decoder.cache.layers, keys, values):
            layer.start(torch.tensor([0, 1, 2]), k[[0, 1, 1]], v[[0, 1, 1]])
        histories = [[], [], []]
        feeds = [[3, 5, 7, 2, 9], [4, 4, 1, 8, 6], [11, 2, 5, 1, 3]]
        for step in range(5):
            if step == 3:  # row 2 starts another sentence, after image 0's prefix
                for layer, k, v in zip(decoder.cache.layers, keys, values):
                    layer.start(torch.tensor([2]), k[[0]], v[[0]])
                histories[2] = []
            decoder.tokens_in.copy_(torch.tensor([f[step] for f in feeds]))
            for row in range(3):
                histories[row].append(feeds[row][step])
            decoder.positions.copy_(torch.tensor([p.shape[1] + len(h) - 1 for h in histories]))
            logits = decoder.forward(lm.model)  # (3, V)
            for row, image in enumerate([0, 1, 1 if step < 3 else 0]):
                tokens = lm.embed_tokens(torch.tensor(histories[row]))
                full = lm.model(inputs_embeds=torch.cat([p[image], tokens])[None]).logits[0, -1]
                assert torch.allclose(logits[row], full, atol=1e-9), (step, row)
        assert torch.equal(first, lm.model(inputs_embeds=p).logits[:, -1].float())


def test_images_get_the_same_sentences_alone_together_and_in_any_batch_size() -> None:
    lm = eos_prone(tiny_gpt2, seed=1)
    images = [torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(4)]
    words = WordConfig(min_length=1)
    results = []
    for rows in (2, 5, 64):
        config = ExplainConfig(static(num_samples=15, batch_size=rows, min_words=1, max_words=5, seed=9), words)
        results.append([e.sentences for e in explain_stream(torch.nn.Identity(), lm, images, config)])
    config = ExplainConfig(static(num_samples=15, batch_size=5, min_words=1, max_words=5, seed=9), words)
    alone = [explain_features(torch.nn.Identity(), lm, image, config).sentences for image in images]
    assert results[0] == results[1] == results[2] == alone
    assert len({s for r in alone for s in r}) > 20
    other = ExplainConfig(static(num_samples=15, batch_size=5, min_words=1, max_words=5, seed=10), words)
    assert explain_features(torch.nn.Identity(), lm, images[0], other).sentences != alone[0]


def test_static_word_limits_and_ends() -> None:
    lm = eos_prone(tiny_bert, seed=3, bias=2.0)
    config = static(num_samples=200, batch_size=16, min_words=3, max_words=7, max_tokens=60)
    ids = sample_token_ids(lm, prefix(4).double(), config)
    counts = [decoded_words(lm.tokenizer, row) for row in ids]
    assert min(counts) >= 3 and max(counts) <= 7 and {3, 7} <= set(counts)
    assert all(lm.eos_token_id not in row for row in ids)
    assert any(lm.tokenizer.convert_tokens_to_ids(piece) in row for row in ids for piece in PIECES)


def test_static_and_eager_decoders_draw_one_distribution() -> None:
    """Chi-square on first- and second-token counts; another prefix is told apart (the check has power)."""
    tokenizer = word_tokenizer()
    lm = FrozenLM(tiny_gpt2(len(tokenizer), seed=1, init=0.3), tokenizer)
    kwargs = dict(num_samples=1500, batch_size=300, min_words=2, max_words=2, top_p=0.95, temperature=3.0)
    p, other = prefix(11), prefix(12)
    fast = sample_token_ids(lm, p, static(**kwargs), torch.Generator().manual_seed(0))
    eager = sample_token_ids(lm, p, SamplingConfig(decoding="eager", **kwargs), torch.Generator().manual_seed(1))
    fast_other = sample_token_ids(lm, other, static(**kwargs), torch.Generator().manual_seed(2))
    assert all(len(ids) == 2 for ids in fast + eager)
    for position in (0, 1):
        counts = [torch.bincount(torch.tensor([ids[position] for ids in s]), minlength=len(tokenizer))
                  for s in (fast, eager, fast_other)]
        assert int((counts[0] > 0).sum()) >= 8
        seen = (counts[0] + counts[1]) > 0
        assert chi2_contingency(torch.stack([counts[0][seen], counts[1][seen]]).numpy()).pvalue > 1e-3
        seen = (counts[0] + counts[2]) > 0
        assert chi2_contingency(torch.stack([counts[0][seen], counts[2][seen]]).numpy()).pvalue < 1e-6


def test_the_host_looks_only_every_few_steps(monkeypatch) -> None:
    """Reads of device values (item, tolist, cpu, bool, nonzero) stay within one per CHECK_EVERY steps plus setup."""
    lm = eos_prone(tiny_gpt2, seed=4)
    config = static(num_samples=60, batch_size=8, min_words=2, max_words=8, max_tokens=16)
    p = prefix(5).double()[None]
    sample_rows(lm, p, [60], [torch.Generator().manual_seed(0)], config)  # the decoder is made and kept
    steps = []
    draw = static_decoder._Run._draw
    monkeypatch.setattr(static_decoder._Run, "_draw", lambda self: (steps.append(1), draw(self))[1])
    reads = []
    for name in ("item", "tolist", "cpu", "__bool__", "nonzero", "__int__", "__float__", "numpy"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _original=original, _name=name, **k: (reads.append(_name),
                                                                                     _original(self, *a, **k))[1])
    sample_rows(lm, p, [60], [torch.Generator().manual_seed(0)], config)
    monkeypatch.undo()
    assert len(steps) >= 40
    assert len(reads) <= len(steps) / CHECK_EVERY + 4, (len(reads), len(steps))


def test_a_step_beyond_capacity_is_decoded_again_with_the_same_result(monkeypatch) -> None:
    """Few candidates, so that rows go on to the whole sort; when more go on than planned the call runs again."""
    monkeypatch.setattr(static_decoder, "CANDIDATES", (2, 4))
    lm = eos_prone(tiny_gpt2, seed=5)
    config = static(num_samples=40, batch_size=8, min_words=1, max_words=6, top_p=0.9)
    p = prefix(6).double()[None]
    first = sample_rows(lm, p, [40], [torch.Generator().manual_seed(3)], config)
    decoder = next(iter(static_decoder._DECODERS[lm.model].values()))
    assert len(decoder.capacities) == 2
    runs = []
    decode = static_decoder._Run.decode
    monkeypatch.setattr(static_decoder._Run, "decode", lambda self: (runs.append(1), decode(self))[1])
    decoder.capacities = [1, 0]
    assert sample_rows(lm, p, [40], [torch.Generator().manual_seed(3)], config) == first
    assert len(runs) == 2  # the first run overflowed, the second had room for every row


# --- the plan ----------------------------------------------------------------------------------


def test_plan_on_the_cpu_is_the_eager_decoder_with_its_batch() -> None:
    tokenizer = word_tokenizer()
    lm = FrozenLM(tiny_gpt2(len(tokenizer)), tokenizer)
    plan = decode_plan(lm, SamplingConfig(num_samples=1000), 4, 60)
    assert (plan.static, plan.graph, plan.rows, plan.dtype) == (False, False, EAGER_ROWS, torch.float32)
    assert (plan.rows_per_round, plan.call_sentences) == (EAGER_ROWS, EAGER_ROWS)
    adaptive = decode_plan(lm, SamplingConfig(num_samples=1000, adaptive=True, round_size=25), 4, 60)
    assert adaptive.rows_per_round == 25
    forced = decode_plan(lm, static(num_samples=100, batch_size=64), 4, 60)
    assert (forced.static, forced.graph, forced.rows, forced.rows_per_round, forced.call_sentences) == (
        True, False, 64, 100, 256)


def test_rows_that_fit_and_bad_settings() -> None:
    assert rows_that_fit(10 * 2**30, 2**20) == 4096  # MEMORY_SHARE = 0.4 of 10 GiB in rows of 1 MiB
    assert rows_that_fit(10 * 2**30, 2**20, fixed_bytes=2**31) == 2048
    assert rows_that_fit(10 * 2**30, 2**20, share=0.5) == 5120
    assert rows_that_fit(10 * 2**30, 1, most=300) == 300
    with pytest.raises(TexplainError, match="does not fit"):
        rows_that_fit(2**20, 2**20)
    with pytest.raises(TexplainError, match="decoding"):
        SamplingConfig(decoding="graph")
    with pytest.raises(TexplainError, match="batch_size"):
        SamplingConfig(batch_size="most")
