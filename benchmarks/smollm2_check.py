"""Real-LM path: SmolLM2-135M (bundled GGUF) alone on Flickr8k dev captions, one translator step, 20 samples.

The same code that trains with the small caption LM runs unchanged with a
real pretrained LM: EfficientNet-Lite0 features of a few Flickr8k photos →
translator → SmolLM2's embedding space. What a CPU can measure of it:

* the LM alone: the dev caption loss (nats a token, the caption's
  end-of-sentence token included) after an untrained translator's prefix,
  its K null slots (the end-of-sentence embedding) and its start
  (``with_slots``), and after the start alone (``start_only``, the prior's
  ``lm`` kind), for each start (:func:`texplain.models.lm.start_tokens`):
  ``eos``, the end-of-sentence token every translator had before; ``chat``,
  SmolLM2's chat template asking for a caption of the form
  :data:`~texplain.models.lm.CAPTION_STYLE` shows (the default); and
  ``chat-no-example``, the same without the example caption; a forward pass
  only;
* what the LM alone says: precision@10 of the top 10 words of 200 sentences
  after the untrained translator's prefix against each of the first 200 dev
  photos' captions (``benchmarks/steering.py``'s null prefix, which needs no
  training), and a few of its sentences;
* one training step and 20 samples through a translator (timings).

Prints and writes ``benchmarks/results/smollm2_check.json``.

    python benchmarks/smollm2_check.py --dev-captions 400 --skip 100 --null-images 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from texplain.atomic import write_json
from texplain.data.captions import read_captions
from texplain.evaluation.metrics import precision_at_k, reference_words
from texplain.generate.config import SamplingConfig
from texplain.generate.sampling import sample_sentences
from texplain.models.classifiers import load_classifier
from texplain.models.features import extract_features
from texplain.models.lm import CAPTION_STYLE, FrozenLM, load_lm, start_tokens
from texplain.models.translator import new_translator
from texplain.text.config import WordConfig
from texplain.text.words import WordCounter
from texplain.training.config import Phase, TrainConfig
from texplain.training.translator_training import train_translator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k" / "captions.tsv"
STARTS = {"eos": ("eos", CAPTION_STYLE), "chat": ("chat", CAPTION_STYLE),
          "chat-no-example": ("chat", CAPTION_STYLE.split(", such as")[0] + ".")}
"""Name: (anchor, caption style) of the starts the LM alone is measured after."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=8, help="(image, caption) pairs in the one training step")
    parser.add_argument("--dev-captions", type=int, default=400, help="dev captions the LM alone is scored on")
    parser.add_argument("--skip", type=int, default=100, help="dev captions skipped (the start was chosen on them)")
    parser.add_argument("--prefix-len", type=int, default=8, help="K, the untrained translator's null slots")
    parser.add_argument("--null-images", type=int, default=200, help="dev photos the LM alone's words are scored on")
    parser.add_argument("--null-samples", type=int, default=200, help="sentences the LM alone writes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/smollm2_run"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    timings = {}
    started = time.perf_counter()
    lm = load_lm("smollm2")
    timings["load_lm_s"] = round(time.perf_counter() - started, 2)
    classifier = load_classifier("efficientnet_lite0")
    pairs = read_captions(args.captions, split="train")[: args.pairs]
    store, _ = extract_features(classifier, [str(p.image) for p in pairs], args.out / "features", progress=False)
    dev_pairs = read_captions(args.captions, split="dev")
    dev = [p.caption for p in dev_pairs[args.skip : args.skip + args.dev_captions]]
    groups: dict[str, list[str]] = {}
    for pair in dev_pairs:
        groups.setdefault(str(pair.image), []).append(pair.caption)
    references = [reference_words(groups[i]) for i in sorted(groups)[: args.null_images]]
    sampling = SamplingConfig(num_samples=args.null_samples, min_words=5, max_words=20, batch_size=args.null_samples)

    alone = {}
    for name, (anchor, style) in STARTS.items():
        _, ids = start_tokens(lm, anchor, style)
        with torch.inference_mode():
            start = lm.embed_tokens(torch.tensor(ids))  # (S, d)
            resting = torch.cat([lm.embed_tokens(torch.tensor([lm.eos_token_id] * args.prefix_len)), start])  # (K + S, d)
            sentences = sample_sentences(lm, resting, sampling)
            counter = WordCounter(WordConfig(top_k=10))
            counter.update(sentences)
            top = [w for w, _ in counter.top(10)]
            alone[name] = {
                "start": lm.tokenizer.decode(ids),
                "with_slots": round(_mean_loss(lm, resting, dev), 4),
                "start_only": round(_mean_loss(lm, start, dev), 4),
                "null_p_at_10": round(sum(precision_at_k(top, r, 10) for r in references) / len(references), 4),
                "null_top_words": top,
                "sentences": sentences[:8],
            }
        print(f"LM alone after {name}: {alone[name]}", flush=True)

    torch.manual_seed(0)
    translator = new_translator(classifier, lm, store.token_shape, prefix_len=10, hidden=512)
    started = time.perf_counter()
    history = train_translator(translator, lm, store, [Phase("one-step", pairs, 1)], args.out / "translator",
                               TrainConfig(batch_size=len(pairs), warmup_steps=0), progress=False)
    timings["train_step_s"] = round(time.perf_counter() - started, 2)
    prefix = translator.eval()(store.features([str(pairs[0].image)]))[0].detach()  # (K + S, d)
    started = time.perf_counter()
    sentences = sample_sentences(lm, prefix, SamplingConfig(num_samples=20, min_words=8, max_words=20, batch_size=20))
    timings["sample_20_s"] = round(time.perf_counter() - started, 2)
    result = {
        "lm": lm.spec,
        "lm_parameters": sum(p.numel() for p in lm.model.parameters()),
        "lm_alone": {"dev_captions": len(dev), "skipped": args.skip, "null_slots": args.prefix_len,
                     "null_images": len(references), "null_samples": args.null_samples, **alone},
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


def _mean_loss(lm: FrozenLM, prefix: torch.Tensor, captions: list[str], batch: int = 50) -> float:
    """Mean caption loss per token (end-of-sentence included) of ``captions`` after one prefix (P, d)."""
    total, count = 0.0, 0
    for start in range(0, len(captions), batch):
        ids, mask = lm.tokenize_captions(captions[start : start + batch])
        total += float(lm.caption_loss(prefix.expand(len(ids), -1, -1), ids, mask)) * int(mask.sum())
        count += int(mask.sum())
    return total / count


if __name__ == "__main__":
    main()
