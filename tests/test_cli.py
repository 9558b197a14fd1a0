"""End to end through ``cli.main``: train a translator, explain images, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from conftest import CAPTIONS, tiny_vit
from texplain import cli
from texplain.models.classifiers import save_classifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory, images, tiny_lm_folder):
    """A saved tiny ViT, a caption file over the test images, and a translator trained via the CLI."""
    root = tmp_path_factory.mktemp("cli")
    save_classifier(tiny_vit(), root / "classifier")
    rows = [{"image": str(p), "caption": c, "split": "dev" if i >= 6 else "train"} for i, (p, c) in enumerate(zip(images, CAPTIONS))]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    code = cli.main(["train", "--classifier", str(root / "classifier"), "--lm", str(tiny_lm_folder),
                     "--captions", str(root / "captions.jsonl"), "--out", str(root / "translator"),
                     "--epochs", "2", "--batch-size", "4", "--prefix-len", "3", "--hidden", "32"])
    assert code == 0
    return root


def test_train_writes_checkpoint_and_dev_loss(trained):
    history = json.loads((trained / "translator" / "history.json").read_text())
    assert len(history["epochs"]) == 2 and history["epochs"][-1]["dev_loss"] is not None
    assert (trained / "translator" / "translator.safetensors").is_file()


def test_explain_folder_end_to_end(trained, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in images[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    code = cli.main(["explain", str(folder), "--translator", str(trained / "translator"), "--out", str(tmp_path / "out"),
                     "--samples", "12", "--min-words", "2", "--max-words", "8", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert "broken.png" in captured.err and "2 explained, 1 skipped" in captured.out
    record = json.loads((tmp_path / "out" / f"{images[0].stem}.json").read_text())
    assert record["n_sentences"] == 12 and len(record["prediction"]) == 3
    assert record["top_words"] and all(0 < w["frequency"] <= 1 for w in record["top_words"])
    assert Image.open(tmp_path / "out" / f"{images[0].stem}.png").size == (800, 400)

    again = tmp_path / "again"
    assert cli.main(["explain", str(images[0]), "--translator", str(trained / "translator"), "--out", str(again),
                     "--samples", "12", "--min-words", "2", "--max-words", "8", "--seed", "1"]) == 0
    assert json.loads((again / f"{images[0].stem}.json").read_text())["sentences"] == record["sentences"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["explain", "{missing}", "--translator", "{translator}", "--out", "{out}"], "no such file or folder"),
        (["explain", "{image}", "--translator", "{translator}", "--out", "{out}", "--classifier", "timm:test_resnet"],
         "trained for classifier"),
        (["explain", "{image}", "--translator", "{out}", "--out", "{out}"], "not a translator checkpoint"),
        (["explain", "{empty}", "--translator", "{translator}", "--out", "{out}"], "no image files"),
        (["train", "--classifier", "{classifier}", "--lm", "{lm}", "--captions", "{bad_captions}", "--out", "{out}"],
         "bad.jsonl:2"),
        (["explain", "{image}", "--translator", "{translator}", "--out", "{out}", "--samples", "0"], "at least 1"),
        (["explain", "{image}", "--translator", "{translator}", "--out", "{out}", "--samples", "auto:0"],
         "at least 1"),
        (["explain", "{image}", "--translator", "{translator}", "--out", "{out}", "--samples", "many"], "auto or auto:N"),
        (["explain", "{image}", "--translator", "{translator}", "--out", "{out}", "--samples", "30", "-n", "40"], "disagree"),
        (["explain", "{image}", "--translator", "{translator}", "--out", "{out}", "--samples", "auto", "--stop-k", "100000"],
         "can never settle"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(trained, images, tiny_lm_folder, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"image": "a.jpg", "caption": "ok", "split": "train"}\n{not json\n')
    values = {"missing": tmp_path / "nope.jpg", "translator": trained / "translator", "out": tmp_path / "o",
              "image": images[0], "classifier": trained / "classifier", "lm": tiny_lm_folder,
              "bad_captions": tmp_path / "bad.jsonl", "empty": tmp_path / "empty"}
    code = cli.main([a.format(**values) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and message in err[-1]


def test_adaptive_explain_records_the_sentences_it_used(trained, images, tmp_path):
    assert cli.main(["explain", str(images[0]), "--translator", str(trained / "translator"), "--out", str(tmp_path),
                     "--samples", "auto:100", "--stop-k", "3", "--min-words", "2", "--max-words", "8"]) == 0
    record = json.loads((tmp_path / f"{images[0].stem}.json").read_text())
    assert record["sampling"]["adaptive"] and 50 <= record["n_sentences"] <= 100 and record["n_sentences"] % 25 == 0


def test_explain_dataset_reads_a_float16_store_only_when_told(trained, images, tmp_path, capsys):
    from texplain.models.classifiers import load_classifier
    from texplain.models.config import ExtractionConfig
    from texplain.models.features import extract_features

    classifier = load_classifier(str(trained / "classifier"))
    extract_features(classifier, [str(p) for p in images[:3]], tmp_path / "f", ExtractionConfig(fp16=True), progress=False)
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"path": str(p), "label": classifier.class_names[0], "split": "test"}) + "\n"
                              for p in images[:3]))
    common = ["explain-dataset", str(labels), "--translator", str(trained / "translator"), "--features", str(tmp_path / "f"),
              "--samples", "3", "--min-words", "2", "--max-words", "6", "--prior", "none"]
    assert cli.main([*common, "--out", str(tmp_path / "wrong")]) == 2
    assert "fp16=True, not False" in capsys.readouterr().err.strip().splitlines()[-1]
    assert cli.main([*common, "--out", str(tmp_path / "right"), "--fp16"]) == 0
    assert "3 images explained now" in capsys.readouterr().out
