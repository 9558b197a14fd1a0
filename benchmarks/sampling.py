"""Benchmark: the shared-prefix sampler against ``transformers``' ``generate``.

Both draw N nucleus-sampled sentences (top_p, temperature 1, no top-k) from
the same LM after the same K-position prefix of embeddings, in one process, on
the same threads. ``generate`` receives the prefix as ``inputs_embeds`` with
``num_return_sequences=N``, the way a user would call it; it counts lengths in
tokens, so its ``min_new_tokens``/``max_new_tokens`` are the word limits times
the tokens per word that the sampler's own sentences had. A second ``generate``
row splits N into batches of 250 (the eager decoder's batch), to separate the
effect of batching from the rest. The sampler decodes as
``--decoding`` says (``auto``: the static decoder on a GPU, the eager one on a
CPU; see texplain.generate.device_plan).

The LM is a folder given with ``--lm`` (e.g. the small caption LM), or else a
GPT-2 of the small LM's default size with random weights and a word-level
vocabulary, so that one token is one word and both methods write exactly the
same lengths. Results go to ``benchmarks/results/sampling.json``; the last
printed line is ``speedup_vs_hf_generate=<x>``.

    python benchmarks/sampling.py --quick
    python benchmarks/sampling.py --lm runs/caption-lm
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads collapse on a shared 2-core machine

import argparse
import math
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import transformers

from texplain.atomic import write_json
from texplain.generate.config import SamplingConfig
from texplain.generate.device_plan import EAGER_ROWS
from texplain.generate.sampling import sample_sentences, sample_token_ids, sampling_plan
from texplain.generate.word_boundaries import count_token_words
from texplain.models.lm import FrozenLM, load_lm
from texplain.training.config import CaptionLMConfig

RESULTS = Path(__file__).parent / "results" / "sampling.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", help="LM folder or id (default: random-weight GPT-2 of the small LM's size)")
    parser.add_argument("--quick", action="store_true", help="N=200, one repeat: under a minute")
    parser.add_argument("--num-samples", type=int, help="sentences per method (default 1000, quick 200)")
    parser.add_argument("--repeats", type=int, help="timed runs per method, best kept (default 2, quick 1)")
    parser.add_argument("--prefix-length", type=int, default=10, help="K prefix positions")
    parser.add_argument("--batch-size", default="auto", help="sentences decoded together, or auto")
    parser.add_argument("--decoding", default="auto", choices=("auto", "eager", "static"))
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--min-words", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def random_small_lm() -> FrozenLM:
    """GPT-2 with the small LM's default shape, random weights, one word per token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    shape = CaptionLMConfig()
    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, shape.vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=shape.vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd, n_layer=shape.n_layer,
        n_head=shape.n_head, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    return FrozenLM(GPT2LMHeadModel(config), tokenizer, "random-gpt2-small-lm-shape")


def make_prefix(lm: FrozenLM, k: int) -> torch.Tensor:
    """K embeddings of random vocabulary tokens: a prefix at the scale the LM expects (K, d)."""
    ids = torch.randint(1, len(lm.tokenizer), (k,), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return lm.embed_tokens(ids.to(lm.device)).clone()


def time_ours(lm: FrozenLM, prefix: torch.Tensor, config: SamplingConfig, repeats: int) -> tuple[float, list[list[int]]]:
    """Best wall time of the sampler: ``sample_token_ids`` then detokenising, as ``sample_sentences`` does."""
    best, rows = math.inf, []
    for _ in range(repeats):
        _sync(lm)
        start = time.perf_counter()
        rows = sample_token_ids(lm, prefix, config)
        [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
        _sync(lm)
        best = min(best, time.perf_counter() - start)
    return best, rows


def time_generate(
    lm: FrozenLM, prefix: torch.Tensor, config: SamplingConfig, lengths: tuple[int, int], batch: int, repeats: int
) -> tuple[float, list[list[int]]]:
    """Best wall time of ``generate`` for N sentences in calls of ``batch`` sequences, detokenising included."""
    min_new, max_new = lengths
    eos = lm.eos_token_id
    best, rows = math.inf, []
    for _ in range(repeats):
        torch.manual_seed(config.seed)
        _sync(lm)
        start = time.perf_counter()
        rows = []
        with torch.inference_mode():
            for first in range(0, config.num_samples, batch):
                out = lm.model.generate(
                    inputs_embeds=prefix[None],
                    attention_mask=torch.ones(1, prefix.shape[0], dtype=torch.long, device=lm.device),
                    do_sample=True, top_p=config.top_p, top_k=0, temperature=config.temperature,
                    num_return_sequences=min(batch, config.num_samples - first),
                    min_new_tokens=min_new, max_new_tokens=max_new, eos_token_id=eos, pad_token_id=eos,
                )
                rows.extend(_strip(r, eos) for r in out.tolist())
        lm.tokenizer.batch_decode(rows, skip_special_tokens=True)
        _sync(lm)
        best = min(best, time.perf_counter() - start)
    return best, rows


def _strip(row: list[int], eos: int) -> list[int]:
    """A generated row up to its first EOS (the rest is padding)."""
    return row[: row.index(eos)] if eos in row else row


def _sync(lm: FrozenLM) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def summary(seconds: float, rows_tokens: list[int], words: list[int]) -> dict:
    n = len(words)
    return {
        "seconds": round(seconds, 3),
        "sentences_per_s": round(n / seconds, 2),
        "mean_tokens": round(sum(rows_tokens) / n, 2),
        "mean_words": round(sum(words) / n, 2),
        "min_words": min(words),
        "max_words": max(words),
    }


def main() -> None:
    args = parse_args()
    n = args.num_samples or (200 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 2)
    lm = (load_lm(args.lm) if args.lm else random_small_lm()).to(args.device)
    prefix = make_prefix(lm, args.prefix_length)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    config = SamplingConfig(num_samples=n, top_p=args.top_p, min_words=args.min_words, max_words=args.max_words,
                            batch_size=batch, decoding=args.decoding)
    load_before = os.getloadavg()
    plan = sampling_plan(lm, config, args.prefix_length)
    # warm-up; the static decoder's batch is made (and its step captured) for the shape it then decodes
    sample_sentences(lm, prefix, config if plan.static else replace(config, num_samples=8, min_words=2, max_words=4))

    ours_s, ours_ids = time_ours(lm, prefix, config, repeats)
    ours_words = [count_token_words(lm.tokenizer, row) for row in ours_ids]
    per_word = sum(len(r) for r in ours_ids) / max(1, sum(ours_words))
    lengths = (max(1, round(config.min_words * per_word)), max(1, round(config.max_words * per_word)))

    gen_s, gen_rows = time_generate(lm, prefix, config, lengths, n, repeats)
    batched_s, batched_rows = time_generate(lm, prefix, config, lengths, EAGER_ROWS, repeats)
    speedup = gen_s / ours_s
    result = {
        "lm": lm.spec,
        "random_weights": args.lm is None,
        "device": str(lm.device),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "prefix_length": args.prefix_length,
        "repeats_best_of": repeats,
        "sampling_config": asdict(config),
        "decode_plan": {k: str(v) for k, v in asdict(plan).items()},
        "generate_token_lengths": {"min_new_tokens": lengths[0], "max_new_tokens": lengths[1], "top_k": 0},
        "shared_prefix_sampler": summary(ours_s, [len(r) for r in ours_ids], ours_words),
        "hf_generate": summary(gen_s, [len(r) for r in gen_rows], [count_token_words(lm.tokenizer, r) for r in gen_rows]),
        "hf_generate_batched": summary(
            batched_s, [len(r) for r in batched_rows], [count_token_words(lm.tokenizer, r) for r in batched_rows]
        ),
        "speedup_vs_hf_generate": round(speedup, 2),
        "speedup_vs_hf_generate_batched": round(batched_s / ours_s, 2),
    }
    write_json(args.out, result)
    kind = "random weights (no --lm given)" if args.lm is None else args.lm
    print(f"LM: {lm.spec}, {kind}; device {lm.device}, {torch.get_num_threads()} threads; N={n}, K={args.prefix_length}")
    print(f"generate lengths: {lengths[0]}-{lengths[1]} new tokens (sampler: {config.min_words}-{config.max_words} words)")
    for name in ("shared_prefix_sampler", "hf_generate", "hf_generate_batched"):
        row = result[name]
        print(f"  {name:22s} {row['seconds']:8.2f} s  {row['sentences_per_s']:8.1f} sentences/s  "
              f"{row['mean_tokens']:5.1f} tokens, {row['mean_words']:5.1f} words per sentence")
    print(f"results: {args.out}")
    print(f"speedup_vs_hf_generate={speedup:.2f}")


if __name__ == "__main__":
    main()
