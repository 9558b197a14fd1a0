"""Real-LM path: one translator training step and 20 samples with SmolLM2-135M (bundled GGUF).

The same code that trains with the small caption LM runs unchanged with a
real pretrained LM: EfficientNet-Lite0 features of a few Flickr8k photos →
translator → SmolLM2's embedding space. Prints and writes timings to
``benchmarks/results/smollm2_check.json``.

    python benchmarks/smollm2_check.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from texplain.atomic import write_json
from texplain.data.captions import read_captions
from texplain.generate.config import SamplingConfig
from texplain.generate.sampling import sample_sentences
from texplain.models.classifiers import load_classifier
from texplain.models.features import extract_features
from texplain.models.lm import load_lm
from texplain.models.translator import new_translator
from texplain.training.config import Phase, TrainConfig
from texplain.training.translator_training import train_translator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "captions.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=8, help="(image, caption) pairs in the one training step")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/smollm2_run"))
    args = parser.parse_args()

    timings = {}
    started = time.perf_counter()
    lm = load_lm("smollm2")
    timings["load_lm_s"] = round(time.perf_counter() - started, 2)
    classifier = load_classifier("efficientnet_lite0")
    pairs = read_captions(args.captions, split="train")[: args.pairs]
    store, _ = extract_features(classifier, [str(p.image) for p in pairs], args.out / "features", progress=False)
    torch.manual_seed(0)
    translator = new_translator(classifier, lm, store.token_shape, prefix_len=10, hidden=512)
    started = time.perf_counter()
    history = train_translator(translator, lm, store, [Phase("one-step", pairs, 1)], args.out / "translator",
                               TrainConfig(batch_size=len(pairs), warmup_steps=0), progress=False)
    timings["train_step_s"] = round(time.perf_counter() - started, 2)
    prefix = translator.eval()(store.features([str(pairs[0].image)]))[0].detach()  # (K, d)
    started = time.perf_counter()
    sentences = sample_sentences(lm, prefix, SamplingConfig(num_samples=20, min_words=8, max_words=20, batch_size=20))
    timings["sample_20_s"] = round(time.perf_counter() - started, 2)
    result = {
        "lm": lm.spec,
        "lm_parameters": sum(p.numel() for p in lm.model.parameters()),
        "trainable_parameters": sum(p.numel() for p in translator.parameters() if p.requires_grad),
        "lm_trainable_parameters": sum(p.numel() for p in lm.model.parameters() if p.requires_grad),
        "train_loss": history.epochs[0]["train_loss"],
        "timings": timings,
        "sentences_per_s": round(20 / timings["sample_20_s"], 2),
        "sentences": sentences,
        "threads": torch.get_num_threads(),
    }
    write_json(Path("benchmarks/results/smollm2_check.json"), result)
    for key in ("lm", "lm_parameters", "trainable_parameters", "lm_trainable_parameters", "train_loss", "timings"):
        print(f"{key}: {result[key]}")
    print("\n".join(sentences[:5]))


if __name__ == "__main__":
    main()
