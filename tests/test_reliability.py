"""Fault injection: no code runs from a model folder, no result is lost or doubled, every fault is one line.

Each test provokes one fault (a hostile folder, a second writer, a name
clash, a truncated file, a full disk, a FIFO, a huge image, a bad option) and
checks what the user gets: a one-line ``error: ...`` and exit code 2 from the
command line, or a :class:`~texplain.errors.TexplainError` from the library,
with nothing already committed lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_vit
from texplain import cli
from texplain.errors import TexplainError
from texplain.models.classifiers import CLASSIFIER_CONFIG, load_classifier, save_classifier

pytestmark = pytest.mark.reliability

FAST = ["-n", "4", "--min-words", "1", "--max-words", "4"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_lm):
    """A saved tiny ViT and an untrained translator for it and the tiny LM, both on disk."""
    from texplain.models.translator import new_translator, save_translator

    root = tmp_path_factory.mktemp("models")
    save_classifier(tiny_vit(), root / "classifier")
    classifier = load_classifier(str(root / "classifier"))
    save_translator(new_translator(classifier, tiny_lm, (101, 64), prefix_len=3, hidden=16).eval(), root / "translator")
    return root


def run(args: list, capsys) -> tuple[int, list[str]]:
    """``texplain ARGS`` → exit code and the lines it wrote to stderr."""
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def one_line_error(code: int, err: list[str], *parts: str) -> None:
    """Exit 2 and a last stderr line ``error: ...`` holding every one of ``parts``."""
    assert code == 2, err
    assert err and err[-1].startswith("error: "), err
    for part in parts:
        assert part in err[-1], err[-1]


def hostile_classifier(folder: Path, marker: Path, spec: str = "os:system", features_of: str = "", **kwargs) -> Path:
    """A saved classifier whose recipe builds itself with ``spec`` (by default a shell command touching ``marker``)."""
    save_classifier(tiny_vit(), folder)
    recipe = json.loads((folder / CLASSIFIER_CONFIG).read_text())
    recipe["build"] = {"spec": spec, "model_kwargs": kwargs or {"command": f"touch {marker}"}}
    recipe["features_of"] = features_of
    (folder / CLASSIFIER_CONFIG).write_text(json.dumps(recipe))
    return folder


# 1. No code runs from a model folder.

def test_a_classifier_folder_runs_no_code_unless_trusted(tmp_path):
    marker = tmp_path / "PWNED"
    folder = hostile_classifier(tmp_path / "evil", marker)
    with pytest.raises(TexplainError, match="os:system.*--trust-code"):
        load_classifier(str(folder))
    assert not marker.exists()
    with pytest.raises(TexplainError, match="not an nn.Module"):
        load_classifier(str(folder), trust_code=True)
    assert marker.exists()


def test_a_classifier_folder_cannot_ask_transformers_for_remote_code(tmp_path):
    folder = hostile_classifier(tmp_path / "evil", tmp_path / "PWNED", spec=f"hf:{tmp_path}", trust_remote_code=True)
    with pytest.raises(TexplainError, match="trust_remote_code.*--trust-code"):
        load_classifier(str(folder))


def test_the_command_line_refuses_a_hostile_classifier_folder(models, images, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    folder = hostile_classifier(tmp_path / "evil", marker, features_of=str(models / "classifier"))
    code, err = run(["explain", images[0], "--translator", models / "translator", "--out", tmp_path / "out",
                     "-c", folder, *FAST], capsys)
    one_line_error(code, err, "os:system", "--trust-code")
    assert not marker.exists()
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": str(images[0]), "caption": "a bird", "split": "train"}))
    code, err = run(["train", "-c", folder, "--lm", "x", "--captions", tmp_path / "captions.jsonl", "--out", tmp_path / "t"],
                    capsys)
    one_line_error(code, err, "--trust-code")
    assert not marker.exists()


def test_a_translator_cannot_name_a_factory_to_run(models, tmp_path):
    from texplain.models.explainer import load_explainer

    translator = tmp_path / "translator"
    translator.mkdir()
    for name in ("translator.safetensors", "translator.json"):
        (translator / name).write_bytes((models / "translator" / name).read_bytes())
    record = json.loads((translator / "translator.json").read_text())
    record["provenance"]["classifier"] = "os:getpid"
    (translator / "translator.json").write_text(json.dumps(record))
    with pytest.raises(TexplainError, match="os:getpid.*--trust-code"):
        load_explainer(translator)


def small_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(2, 3))


def test_a_factory_typed_by_the_user_stays_allowed():
    assert load_classifier("test_reliability:small_net").class_names == ["class_0", "class_1", "class_2"]
