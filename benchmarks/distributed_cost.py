"""The single-process figures behind the cost model of docs/distributed.md, measured on this machine's CPU.

One process, ``--threads`` threads, models that ship in PyPI packages (nothing downloaded):

1. feature extraction: images/s through ``efficientnet_lite0`` at 224 px (JPEG decode included), and of the
   decoding and preprocessing alone (what a GPU leaves to the CPU); the memory a store's index takes per image;
2. translator training: pairs/s, steps of ``--batch`` pairs through the frozen SmolLM2-135M with a pooled
   translator, forward and backward, as ``train_translator`` runs them;
3. explanation: sentences/s of the shared-prefix sampler with SmolLM2-135M (batch ``--sample-batch``, 5-20
   words), hence images/s at N = 1000;
4. the committing process of ``--engine ray``: rows/s that ``ResultsFolder.commit`` writes (Parquet part and
   manifest, rows the size of real ones);

and the FLOPs behind 2 and 3, counted from SmolLM2's shape, which docs/distributed.md carries to GPUs. Writes
``benchmarks/results/distributed_cost.json``; takes a few minutes.

    python benchmarks/distributed_cost.py --threads 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from texplain.analysis.results import ResultsFolder
from texplain.atomic import write_json
from texplain.data.captions import CaptionPair
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.generate.explain import explain_features
from texplain.models.classifiers import load_classifier
from texplain.models.config import ExtractionConfig
from texplain.models.features import FeatureStore, extract_features, readable_pixels
from texplain.models.lm import load_lm
from texplain.models.translator import new_translator
from texplain.training.config import Phase, TrainConfig
from texplain.training.translator_training import train_translator

HERE = Path(__file__).resolve().parent
WORDS = ("a man dog woman child red blue small large standing sitting running near on the grass water street beach "
         "field snow ball bike car boat tree building wall with his her two three people group white black").split()


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = _images(folder / "images", args.images)
        classifier = load_classifier("efficientnet_lite0")
        started = time.perf_counter()
        store, _ = extract_features(classifier, paths, folder / "features", ExtractionConfig(batch_size=32), progress=False)
        extraction_s = time.perf_counter() - started
        started = time.perf_counter()
        readable_pixels(classifier, paths)
        decoding_s = time.perf_counter() - started
        row_bytes = _index_bytes_per_row(store)
        lm = load_lm("smollm2")
        captions = [_caption(random.Random(i)) for i in range(args.pairs)]
        pairs = [CaptionPair(Path(paths[i % len(paths)]), captions[i]) for i in range(args.pairs)]
        torch.manual_seed(0)
        translator = new_translator(classifier, lm, store.token_shape, mode="pooled", hidden=512)
        config = TrainConfig(batch_size=args.batch, warmup_steps=1)
        train_translator(translator, lm, store, [Phase("warm-up", pairs[: args.batch], 1)], folder / "warm", config,
                         progress=False)
        started = time.perf_counter()
        train_translator(translator, lm, store, [Phase("timed", pairs, 1)], folder / "timed", config, progress=False)
        training_s = time.perf_counter() - started
        tokens = sum(int(m.sum()) for m in [lm.tokenize_captions(captions, config.max_tokens)[1]])
        sampling = SamplingConfig(num_samples=args.sentences, batch_size=args.sample_batch, seed=0)
        features = store.load_all(paths[:1]).float()[0]
        explain_features(translator, lm, features, ExplainConfig(sampling=SamplingConfig(num_samples=8, batch_size=8)))
        started = time.perf_counter()
        explanation = explain_features(translator, lm, features, ExplainConfig(sampling=sampling, word_cloud=False))
        sampling_s = time.perf_counter() - started
        words_per_sentence = np.mean([len(s.split()) for s in explanation.sentences])
        tokens_per_sentence = np.mean([len(lm.tokenizer(s)["input_ids"]) for s in explanation.sentences])
        commit_rows_per_s = _commit_rate(folder / "results", args.commit_parts)
    shape = lm.model.config
    per_token = _flops_per_token(shape)
    prefix = translator.config.output_len
    result = {
        "machine": {"threads": args.threads, "load_average_1min": round(load, 2), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__},
        "models": {"classifier": "efficientnet_lite0", "feature_shape": list(store.token_shape), "lm": "smollm2 (135M)",
                   "translator_parameters": sum(p.numel() for p in translator.parameters()), "prefix_positions": prefix},
        "extraction": {"images": len(paths), "images_per_s": round(len(paths) / extraction_s, 2),
                       "decode_preprocess_images_per_s": round(len(paths) / decoding_s, 2),
                       "index_bytes_per_image": row_bytes},
        "training": {"pairs": len(pairs), "batch": args.batch, "pairs_per_s": round(len(pairs) / training_s, 2),
                     "caption_tokens_per_pair": round(tokens / len(pairs), 1)},
        "sampling": {"sentences": args.sentences, "batch": args.sample_batch,
                     "sentences_per_s": round(args.sentences / sampling_s, 2),
                     "images_per_s_at_n1000": round(args.sentences / sampling_s / 1000, 4),
                     "words_per_sentence": round(float(words_per_sentence), 1),
                     "tokens_per_sentence": round(float(tokens_per_sentence), 1)},
        "commit": {"rows_per_s": round(commit_rows_per_s, 1)},
        "flops": {
            "lm_forward_per_token": per_token,
            # frozen LM: the backward pass computes activation gradients only, about one more forward's worth
            "training_per_pair": round(2 * per_token * (prefix + tokens / len(pairs))),
            "sampling_per_sentence": round(per_token * tokens_per_sentence),
        },
    }
    write_json(args.out, result)
    for name in ("extraction", "training", "sampling", "commit"):
        print(name, result[name])
    print("flops", result["flops"], "->", args.out)


def _flops_per_token(config) -> int:
    """Forward FLOPs per token of a Llama-shaped LM: 2 x (the matrices' weights) + the LM head (attention over
    short captions is negligible)."""
    d, layers, ffn, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    kv = d * config.num_key_value_heads // config.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * ffn  # q, o; k, v; gate, up, down
    return int(2 * (layers * per_layer + d * vocab))


def _index_bytes_per_row(store) -> int:
    """Memory per image of a store's index as ``FeatureStore`` holds it, for a streamed caption set's rows."""
    import json
    import shutil
    import tracemalloc

    folder = store.folder.with_name("index-memory")
    folder.mkdir()
    shutil.copy(store.folder / "meta.json", folder / "meta.json")
    for shard in range(10):
        rows = [dict(store.row(p), path=f"/data/cc12m/{shard:05d}.tar/{shard:05d}{i:04d}", shard=f"shard_{shard:05d}",
                     captions=[_caption(random.Random(i))], stream=[f"/data/cc12m/{shard:05d}.tar", i])
                for i, p in enumerate(store.paths)]
        (folder / f"shard_{shard:05d}.rows.json").write_text(json.dumps(rows))
    tracemalloc.start()
    loaded = FeatureStore(folder)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(size / len(loaded))


def _images(folder: Path, count: int) -> list[str]:
    """``count`` random 320 x 240 JPEGs (decode and resize cost like a photo's)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def _caption(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14)))


def _commit_rate(folder: Path, parts: int) -> float:
    """Rows per second the committing process writes, for 64-row parts of 300 words and 5 sentences each."""
    rng = random.Random(0)
    rows = [{"image": f"/data/audit/{i:07d}.jpg", "label": "bird", "split": "test", "group": None, "predicted": "bird",
             "confidence": 0.9, "correct": True, "top5": [{"index": k, "name": f"class{k}", "prob": 0.1} for k in range(5)],
             "n_sentences": 1000, "top_word": "water",
             "words": [{"word": f"word{k}", "count": rng.randint(1, 1000)} for k in range(300)],
             "class_mentions": [{"name": "bird", "count": 400}], "sentences": [_caption(rng) for _ in range(5)]}
            for i in range(64)]
    results = ResultsFolder.open(folder, {"benchmark": True}, create=True)
    started = time.perf_counter()
    for _ in range(parts):
        results.commit(rows, [])
    return parts * len(rows) / (time.perf_counter() - started)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=250)
    parser.add_argument("--sample-batch", type=int, default=250)
    parser.add_argument("--commit-parts", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "distributed_cost.json")
    return parser.parse_args()


if __name__ == "__main__":
    main()
