"""Fault injection: no code runs from a model folder, no result is lost or doubled, every fault is one line.

Each test provokes one fault (a hostile folder, a second writer, a name
clash, a truncated file, a full disk, a FIFO, a huge image, a bad option) and
checks what the user gets: a one-line ``error: ...`` and exit code 2 from the
command line, or a :class:`~texplain.errors.TexplainError` from the library,
with nothing already committed lost.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_vit
from texplain import cli
from texplain.errors import TexplainError
from texplain.models.classifiers import CLASSIFIER_CONFIG, load_classifier, save_classifier

pytestmark = pytest.mark.reliability

FAST = ["--samples", "4", "--min-words", "1", "--max-words", "4"]


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


@pytest.mark.parametrize("spec,argument,value", [("hf:{tmp}", "trust_remote_code", True),
                                                  ("timm:test_vit", "checkpoint_path", "{tmp}/evil.pth")])
def test_a_classifier_folder_cannot_pass_a_built_in_backend_what_runs_code(tmp_path, spec, argument, value):
    fill = str(tmp_path)
    folder = hostile_classifier(tmp_path / "evil", tmp_path / "PWNED", spec=spec.format(tmp=fill),
                                **{argument: value if value is True else value.format(tmp=fill)})
    with pytest.raises(TexplainError, match=f"{argument}.*--trust-code"):
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
    (tmp_path / "labels.jsonl").write_text("\n".join(
        json.dumps({"path": str(p), "label": "class_0", "split": s}) for p, s in zip(images, ["train", "test"] * 2)))
    code, err = run(["mitigate", "--out", tmp_path / "m", "-c", folder, tmp_path / "labels.jsonl",
                     "--methods", "erm", "--seeds", "1"], capsys)
    one_line_error(code, err, "--trust-code")
    assert not marker.exists()


def copy_translator(models: Path, folder: Path, config: dict | None = None, **provenance) -> Path:
    """A copy of the test translator whose config and provenance fields are replaced by those given."""
    folder.mkdir(parents=True)
    for name in ("translator.safetensors", "translator.json"):
        (folder / name).write_bytes((models / "translator" / name).read_bytes())
    record = json.loads((folder / "translator.json").read_text())
    record["config"].update(config or {})
    record["provenance"].update(provenance)
    (folder / "translator.json").write_text(json.dumps(record))
    return folder


def test_a_translator_cannot_name_a_factory_to_run(models, tmp_path):
    from texplain.models.explainer import load_explainer

    with pytest.raises(TexplainError, match="os:getpid.*--trust-code"):
        load_explainer(copy_translator(models, tmp_path / "translator", classifier="os:getpid"))


def small_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(2, 3))


def test_a_factory_typed_by_the_user_stays_allowed():
    assert load_classifier("test_reliability:small_net").class_names == ["class_0", "class_1", "class_2"]


# 2. One writer per results folder.

HOLD_LOCK = ("import fcntl, os, sys, time; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
             "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)")


@pytest.fixture(scope="module")
def explainer(models):
    from texplain.models.explainer import load_explainer

    return load_explainer(models / "translator")


@pytest.fixture(scope="module")
def items(images):
    from texplain.data.labelled import LabelledImage

    return [LabelledImage(path, f"class_{i % 3}", "test", None) for i, path in enumerate(images[:4])]


def dataset_config():
    from texplain.analysis.config import DatasetExplainConfig
    from texplain.generate.config import ExplainConfig, SamplingConfig
    from texplain.text.config import ClassWordConfig

    sampling = SamplingConfig(num_samples=3, min_words=1, max_words=4, batch_size=3)
    return DatasetExplainConfig(explain=ExplainConfig(sampling=sampling, word_cloud=False), chunk_size=2,
                                class_words=ClassWordConfig(wordnet=False), prior=None)


def labels_file(items, path: Path) -> Path:
    path.write_text("\n".join(json.dumps({"path": str(i.path), "label": i.label, "split": i.split}) for i in items))
    return path


def test_a_second_run_into_a_locked_results_folder_stops_and_a_killed_one_never_blocks(explainer, items, tmp_path):
    from texplain.analysis.explain_dataset import explain_dataset
    from texplain.locking import LOCK_FILE

    out = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / LOCK_FILE)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(TexplainError, match="another run is writing"):
            explain_dataset(explainer, items, out, dataset_config(), progress=False)
        assert not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    run = explain_dataset(explainer, items, out, dataset_config(), progress=False)
    assert run.written == run.total == len(items)


def test_the_command_line_says_in_one_line_that_the_folder_is_busy(models, items, tmp_path, capsys):
    from texplain.locking import locked_folder

    out = tmp_path / "results"
    with locked_folder(out):
        code, err = run(["explain-dataset", labels_file(items, tmp_path / "labels.jsonl"), "--translator",
                         models / "translator", "--out", out, "--no-wordnet", "--prior", "none", *FAST], capsys)
    one_line_error(code, err, str(out), "another run is writing")


def test_two_extractions_into_one_feature_store_cannot_mix_shards(images, tmp_path):
    from texplain.locking import locked_folder
    from texplain.models.features import extract_features

    with locked_folder(tmp_path / "features"):
        with pytest.raises(TexplainError, match="another run is writing"):
            extract_features(tiny_vit(), [str(p) for p in images[:2]], tmp_path / "features", progress=False)


# 3, 4. One output per input, and never over an input.

def refuse(*args, **kwargs):
    raise AssertionError("the work started before the refusal")


@pytest.fixture()
def no_models(monkeypatch):
    """Loading models fails the test: what it guards must be refused before any work."""
    import texplain.models.explainer

    monkeypatch.setattr(texplain.models.explainer, "load_explainer", refuse)


def test_images_sharing_a_stem_get_one_record_each(models, images, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    for i, name in enumerate(["x.jpg", "x.png", "X.bmp", "a/y.png", "b/y.png", "photo.v1.jpg", "photo.v2.jpg"]):
        Image.open(images[i]).save(folder / name)
    code, err = run(["explain", folder, "--translator", models / "translator", "--out", tmp_path / "out", *FAST], capsys)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert sorted(Path(r["image"]).relative_to(folder).as_posix() for r in records) == sorted(
        ["x.jpg", "x.png", "X.bmp", "a/y.png", "b/y.png", "photo.v1.jpg", "photo.v2.jpg"])
    assert len(list((tmp_path / "out").glob("*.png"))) == 7


def test_out_in_the_image_folder_never_replaces_an_image(models, images, tmp_path, capsys, no_models):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(images[0]).save(folder / "x.png")
    before = (folder / "x.png").read_bytes()
    code, err = run(["explain", folder, "--translator", models / "translator", "--out", folder, *FAST], capsys)
    one_line_error(code, err, "x.png", "--out")
    assert (folder / "x.png").read_bytes() == before


def unwritable(tmp_path: Path) -> Path:
    """A folder path nothing can be written under: read-only, or (as root, who may write anyway) under a file."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / "out"
    return folder / "out"


def test_explain_checks_its_out_is_writable_before_any_work(models, images, tmp_path, capsys, no_models):
    out = unwritable(tmp_path)
    code, err = run(["explain", images[0], "--translator", models / "translator", "--out", out, *FAST], capsys)
    one_line_error(code, err, str(out), "cannot write")


# 7. Nothing explained is a failure.

def test_one_unreadable_image_exits_non_zero(models, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    code, err = run(["explain", broken, "--translator", models / "translator", "--out", tmp_path / "out", *FAST], capsys)
    one_line_error(code, err, "broken.jpg", "nothing explained")


@pytest.fixture(scope="module")
def results(explainer, items, tmp_path_factory):
    """A finished results folder of four images."""
    from texplain.analysis.explain_dataset import explain_dataset

    folder = tmp_path_factory.mktemp("results") / "results"
    explain_dataset(explainer, items, folder, dataset_config(), progress=False)
    return folder


def test_explain_dataset_checks_its_out_is_writable_before_any_work(models, items, tmp_path, capsys, no_models):
    out = unwritable(tmp_path)
    code, err = run(["explain-dataset", labels_file(items, tmp_path / "labels.jsonl"), "--translator",
                     models / "translator", "--out", out], capsys)
    one_line_error(code, err, str(out.parent), "cannot write")


def test_analyse_checks_its_out_is_writable_before_any_work(results, tmp_path, capsys, monkeypatch):
    import texplain.analysis.analyse

    monkeypatch.setattr(texplain.analysis.analyse, "analyse_folders", refuse)
    out = unwritable(tmp_path)
    code, err = run(["analyse", results, "--out", out], capsys)
    one_line_error(code, err, str(out.parent), "cannot write")


# 5. Damaged or missing files: one line each.

def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_truncated_or_empty_translator_is_one_line(models, images, tmp_path, capsys, keep):
    translator = copy_translator(models, tmp_path / "translator")
    truncate(translator / "translator.safetensors", keep)
    code, err = run(["explain", images[0], "--translator", translator, "--out", tmp_path / "out", *FAST], capsys)
    one_line_error(code, err, "translator.safetensors")


def test_a_translator_config_that_does_not_fit_its_weights_is_one_line(models, images, tmp_path, capsys):
    translator = copy_translator(models, tmp_path / "translator", config={"hidden": 32})
    code, err = run(["explain", images[0], "--translator", translator, "--out", tmp_path / "out", *FAST], capsys)
    one_line_error(code, err, str(translator), "translator.json")


def test_a_truncated_classifier_folder_is_one_line(models, images, tmp_path, capsys):
    folder = tmp_path / "classifier"
    copy = load_classifier(str(models / "classifier"))
    copy.features_of = str(models / "classifier")
    save_classifier(copy, folder)
    truncate(folder / "classifier.safetensors")
    code, err = run(["explain", images[0], "--translator", models / "translator", "--out", tmp_path / "out",
                     "-c", folder, *FAST], capsys)
    one_line_error(code, err, "classifier.safetensors")


def test_a_truncated_feature_shard_is_one_line(images, tmp_path):
    from texplain.models.features import FeatureStore, extract_features

    paths = [str(p) for p in images[:2]]
    extract_features(tiny_vit(), paths, tmp_path / "features", progress=False)
    truncate(tmp_path / "features" / "shard_00000.safetensors")
    with pytest.raises(TexplainError) as error:
        FeatureStore(tmp_path / "features").features(paths)
    assert "\n" not in str(error.value) and "shard_00000.safetensors" in str(error.value)


def test_resuming_from_a_truncated_training_state_is_one_line(models, images, tiny_lm_folder, tmp_path, capsys):
    from conftest import CAPTIONS

    captions = tmp_path / "captions.jsonl"
    captions.write_text("\n".join(json.dumps({"image": str(p), "caption": c, "split": "train"})
                                  for p, c in zip(images, CAPTIONS)))
    train = ["train", "-c", models / "classifier", "--lm", tiny_lm_folder, "--captions", captions, "--out",
             tmp_path / "t", "--batch-size", "4", "--hidden", "16", "--prefix-len", "3"]
    assert run([*train, "--epochs", "1"], capsys)[0] == 0
    truncate(tmp_path / "t" / "checkpoint" / "state.pt")
    code, err = run([*train, "--epochs", "2", "--resume"], capsys)
    one_line_error(code, err, "state.pt", "--resume")


def test_a_recorded_classifier_missing_from_disk_is_one_line_naming_c(models, images, tmp_path, capsys):
    translator = copy_translator(models, tmp_path / "translator", classifier=str(tmp_path / "moved" / "classifier"))
    code, err = run(["explain", images[0], "--translator", translator, "--out", tmp_path / "out", *FAST], capsys)
    one_line_error(code, err, str(tmp_path / "moved" / "classifier"), "no such folder", "-c")


def test_a_recorded_hub_classifier_offline_is_one_line_naming_c(models, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from texplain.models.explainer import load_explainer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    translator = copy_translator(models, tmp_path / "translator", classifier="timm:resnet18")
    with pytest.raises(TexplainError, match="timm:resnet18.*-c") as error:
        load_explainer(translator)
    assert "\n" not in str(error.value)


# 6. Only regular files are read.

@pytest.fixture()
def alarm():
    """Fail, instead of hanging, when the test blocks for 20 seconds."""
    def timeout(*args):
        raise TimeoutError("blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(models, images, tmp_path, capsys, alarm):
    from texplain.data.images import load_rgb
    from texplain.errors import BadImageError

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(BadImageError, match="fifo.png: not a regular file"):
        load_rgb(fifo)
    code, err = run(["explain", fifo, "--translator", models / "translator", "--out", tmp_path / "out", *FAST], capsys)
    one_line_error(code, err, "fifo.png", "not a regular file")


# 8. A translator's recorded paths do not depend on the folder it is used from.

@pytest.fixture()
def run_folder(models, tiny_lm_folder, tmp_path, monkeypatch):
    """``run/classifier`` and ``run/lm`` under the working folder, as the demo lays them out."""
    shutil.copytree(models / "classifier", tmp_path / "run" / "classifier")
    shutil.copytree(tiny_lm_folder, tmp_path / "run" / "lm")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path / "run"


def test_a_translator_saved_with_relative_paths_works_from_another_folder(run_folder, tmp_path, monkeypatch):
    from texplain.models.explainer import load_explainer
    from texplain.models.lm import load_lm
    from texplain.models.translator import new_translator, save_translator

    translator = new_translator(load_classifier("run/classifier"), load_lm("run/lm"), (101, 64), prefix_len=3, hidden=16)
    save_translator(translator, "run/translator")
    recorded = json.loads((run_folder / "translator" / "translator.json").read_text())["provenance"]
    assert (recorded["classifier"], recorded["lm"]) == ("../classifier", "../lm")
    assert translator.provenance.lm == str(run_folder / "lm")
    monkeypatch.chdir(tmp_path / "elsewhere")
    explainer = load_explainer(run_folder / "translator")
    assert explainer.classifier.spec == str(run_folder / "classifier")
    assert explainer.lm.spec == str(run_folder / "lm")
    assert load_explainer(run_folder / "translator", classifier=str(run_folder / "classifier")).lm.spec == str(run_folder / "lm")


def test_a_translator_recording_paths_from_where_it_was_trained_works_from_another_folder(
        models, run_folder, tmp_path, monkeypatch, capsys, images):
    translator = copy_translator(models, run_folder / "translator", classifier="run/classifier", lm="run/lm")
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, err = run(["explain", images[0], "--translator", translator, "--out", tmp_path / "out", *FAST], capsys)
    assert code == 0, err


# 9. Pixels read from one image are bounded.

def test_a_huge_png_is_refused_before_it_is_decoded(tmp_path):
    from PIL import Image

    from texplain.data.images import load_rgb
    from texplain.errors import BadImageError

    Image.new("1", (13000, 13000)).save(tmp_path / "huge.png")
    with pytest.raises(BadImageError, match="huge.png: 13000×13000 pixels, more than"):
        load_rgb(tmp_path / "huge.png")


def test_a_jpeg_above_the_limit_is_decoded_at_a_reduced_size_and_a_png_refused(images, tmp_path, monkeypatch):
    from PIL import Image

    import texplain.data.images
    from texplain.data.images import load_rgb
    from texplain.errors import BadImageError

    monkeypatch.setattr(texplain.data.images, "MAX_PIXELS", 2000, raising=False)
    picture = Image.open(images[0]).convert("RGB").resize((64, 48))
    picture.save(tmp_path / "big.jpg", quality=95)
    picture.save(tmp_path / "big.png")
    assert load_rgb(tmp_path / "big.jpg").size == (32, 24)
    with pytest.raises(BadImageError, match="big.png: 64×48 pixels"):
        load_rgb(tmp_path / "big.png")


# Usage errors: one line too.

@pytest.mark.parametrize("args,message", [
    (["explain", "x.jpg", "--translator", "t", "--out", "o", "--samples", "many"], "--samples"),
    (["explain", "x.jpg", "--translator", "t", "--out", "o", "--bogus"], "--bogus"),
    (["explain", "x.jpg", "--out", "o"], "--translator"),
    (["explian"], "explian"),
    (["analyse", "r", "--out", "o", "--top-words", "1.5"], "--top-words"),
])
def test_a_bad_option_is_one_line(capsys, args, message):
    code = cli.main(args)
    shown = capsys.readouterr()
    assert shown.out == "" and len(shown.err.strip().splitlines()) == 1
    one_line_error(code, shown.err.strip().splitlines(), message)


def test_no_command_shows_the_help(capsys):
    assert cli.main([]) in (0, 2)
    shown = capsys.readouterr()
    assert "explain-dataset" in shown.out + shown.err


# A full disk: one line, and nothing already committed lost.

def fails_on_call(number: int, real):
    """``real``, except that its ``number``-th call finds the disk full."""
    calls = {"n": 0}

    def writer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    return writer


def one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "No space left on device" in message
    for part in parts:
        assert part in message, message


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


def test_a_full_disk_during_a_feature_shard_keeps_the_shards_before_it(images, tmp_path, monkeypatch):
    import safetensors.torch

    from texplain.models.config import ExtractionConfig
    from texplain.models.features import FeatureStore, extract_features

    paths, folder, config = [str(p) for p in images[:4]], tmp_path / "features", ExtractionConfig(shard_size=2)
    monkeypatch.setattr(safetensors.torch, "save_file", fails_on_call(2, safetensors.torch.save_file))
    with pytest.raises(TexplainError) as error:
        extract_features(tiny_vit(), paths, folder, config, progress=False)
    one_line(error, "shard_00001.safetensors")
    assert FeatureStore(folder).paths == paths[:2] and not leftovers(folder)
    monkeypatch.undo()
    store, _ = extract_features(tiny_vit(), paths, folder, config, progress=False)
    assert store.paths == paths and store.features(paths).shape[0] == 4


def test_a_full_disk_during_a_training_checkpoint_keeps_the_last_one(images, tiny_lm, tmp_path, monkeypatch):
    from conftest import CAPTIONS
    from texplain.data.captions import CaptionPair
    from texplain.models.config import TranslatorConfig
    from texplain.models.features import extract_features
    from texplain.models.translator import Translator
    from texplain.training.config import Phase, TrainConfig
    from texplain.training.translator_training import train_translator

    store, _ = extract_features(tiny_vit(), [str(p) for p in images], tmp_path / "features", progress=False)
    pairs = [CaptionPair(images[i], CAPTIONS[i]) for i in range(8)]

    def train(**kwargs):
        torch.manual_seed(0)
        translator = Translator(TranslatorConfig(in_tokens=101, in_dim=64, lm_dim=tiny_lm.embed_dim, prefix_len=3, hidden=16))
        return train_translator(translator, tiny_lm, store, [Phase("train", pairs, 3)], tmp_path / "out",
                                TrainConfig(batch_size=4), progress=False, **kwargs)

    monkeypatch.setattr(torch, "save", fails_on_call(2, torch.save))
    with pytest.raises(TexplainError) as error:
        train()
    one_line(error, "checkpoint")
    assert torch.load(tmp_path / "out" / "checkpoint" / "state.pt", weights_only=True)["epoch"] == 0
    assert not leftovers(tmp_path / "out")
    monkeypatch.undo()
    assert [row["epoch"] for row in train(resume=True).epochs] == [1, 2, 3]


def test_a_full_disk_during_a_parquet_part_keeps_the_parts_before_it(explainer, items, tmp_path, monkeypatch):
    import pyarrow.parquet

    from texplain.analysis.explain_dataset import explain_dataset
    from texplain.analysis.results import ResultsFolder

    out = tmp_path / "results"
    monkeypatch.setattr(pyarrow.parquet, "write_table", fails_on_call(2, pyarrow.parquet.write_table))
    with pytest.raises(TexplainError) as error:
        explain_dataset(explainer, items, out, dataset_config(), progress=False)
    one_line(error, "part-00001.parquet")
    assert len(ResultsFolder.open(out).done_images()) == 2 and not leftovers(out)
    monkeypatch.undo()
    run = explain_dataset(explainer, items, out, dataset_config(), progress=False)
    assert run.written == 2 and sorted(ResultsFolder.open(out).done_images()) == sorted(
        str(i.path.resolve()) for i in items)


def test_a_fifo_named_like_a_caption_or_label_file_is_refused_not_waited_on(tmp_path, alarm):
    from texplain.data.captions import read_captions
    from texplain.data.labelled import read_labelled

    for name, read in (("captions.tsv", read_captions), ("labels.csv", read_labelled)):
        os.mkfifo(tmp_path / name)
        with pytest.raises(TexplainError, match=f"{name}: not a regular file"):
            read(tmp_path / name)


def test_hide_foreground_never_replaces_an_image_with_its_hidden_copy(images, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "all").mkdir()
    (tmp_path / "masks").mkdir()
    Image.open(images[0]).save(tmp_path / "all" / "x.png")
    Image.new("L", Image.open(images[0]).size, 255).save(tmp_path / "masks" / "x.png")
    before = (tmp_path / "all" / "x.png").read_bytes()
    (tmp_path / "labels.jsonl").write_text(json.dumps({"path": "all/x.png", "label": "bird"}))
    code, err = run(["hide-foreground", tmp_path / "labels.jsonl", "--masks", tmp_path / "masks", "--out", tmp_path],
                    capsys)
    one_line_error(code, err, "x.png", "--out")
    assert (tmp_path / "all" / "x.png").read_bytes() == before


@pytest.mark.parametrize("command", [
    ["evaluate", "--translator", "t", "--captions", "c.jsonl", "--json", "{out}/figures.json"],
    ["mitigate", "--demo", "d", "--out", "{out}"],
])
def test_long_commands_check_their_output_is_writable_first(tmp_path, capsys, no_models, command):
    out = unwritable(tmp_path)
    code, err = run([arg.format(out=out) for arg in command], capsys)
    one_line_error(code, err, str(out), "cannot write")


# 10. No Hugging Face model runs its own code (auto_map) without --trust-code, and nothing asks on stdin.

EVIL_MODULE = """
import pathlib
pathlib.Path({marker!r}).touch()
from transformers import {config}, {model}


class EvilConfig({config}):
    model_type = "evil"


class EvilModel({model}):
    config_class = EvilConfig
"""


@pytest.fixture()
def modules_cache(tmp_path, monkeypatch):
    """transformers copies a model's own modules here (not into ~/.cache) when it runs them."""
    import transformers.dynamic_module_utils

    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))


@pytest.fixture()
def answer_yes(monkeypatch):
    """A 'y' waiting on stdin, as if the user had answered transformers' "run the custom code? [y/N]"."""
    import io

    stdin = io.StringIO("y\n" * 3)
    monkeypatch.setattr(sys, "stdin", stdin)
    return stdin


def with_own_code(source: Path, folder: Path, marker: Path, auto_class: str, config: str, model: str) -> Path:
    """A copy of the model folder ``source`` whose config.json maps ``auto_class`` to evil.py (which touches ``marker``)."""
    shutil.copytree(source, folder)
    (folder / "evil.py").write_text(EVIL_MODULE.format(marker=str(marker), config=config, model=model))
    recipe = json.loads((folder / "config.json").read_text())
    recipe.update(model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", auto_class: "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(recipe))
    return folder


@pytest.fixture()
def evil_lm(tiny_lm_folder, tmp_path, modules_cache):
    return with_own_code(tiny_lm_folder, tmp_path / "evil-lm", tmp_path / "PWNED", "AutoModelForCausalLM",
                         "GPT2Config", "GPT2LMHeadModel")


def test_an_lm_folder_with_its_own_code_is_refused_and_nothing_is_asked(evil_lm, tmp_path, answer_yes):
    from texplain.models.lm import load_lm

    with pytest.raises(TexplainError) as error:
        load_lm(str(evil_lm))
    assert not (tmp_path / "PWNED").exists()
    assert answer_yes.read() == "y\n" * 3  # stdin untouched: no question was asked
    assert re.search(r"config.json names Python code.*evil.EvilModel.*--trust-code", str(error.value))
    assert "\n" not in str(error.value)


def test_trust_code_lets_an_lm_folder_run_its_own_code(evil_lm, tmp_path):
    from texplain.models.lm import load_lm

    lm = load_lm(str(evil_lm), trust_code=True)
    assert type(lm.model).__name__ == "EvilModel" and (tmp_path / "PWNED").exists()


def test_an_lm_whose_tokenizer_names_its_own_code_is_refused(tiny_lm_folder, tmp_path, answer_yes):
    from texplain.models.lm import load_lm

    folder = tmp_path / "lm"
    shutil.copytree(tiny_lm_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TexplainError, match=r"tokenizer_config.json names Python code.*--trust-code"):
        load_lm(str(folder))


def test_train_refuses_an_lm_with_its_own_code_in_one_line(models, evil_lm, images, tmp_path, capsys, answer_yes):
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": str(images[0]), "caption": "a bird", "split": "train"}))
    code, err = run(["train", "-c", models / "classifier", "--lm", evil_lm, "--captions", tmp_path / "captions.jsonl",
                     "--out", tmp_path / "t"], capsys)
    one_line_error(code, err, "evil.EvilModel", "--trust-code")
    assert not (tmp_path / "PWNED").exists()


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory) -> Path:
    """A tiny transformers ViT image classifier with its image processor, saved as a folder."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("hf") / "vit"
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, num_labels=3)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture()
def evil_classifier(hf_classifier, tmp_path, modules_cache):
    return with_own_code(hf_classifier, tmp_path / "evil-vit", tmp_path / "PWNED", "AutoModelForImageClassification",
                         "ViTConfig", "ViTForImageClassification")


def test_an_hf_classifier_with_its_own_code_is_refused(hf_classifier, evil_classifier, tmp_path, answer_yes):
    assert load_classifier(f"hf:{hf_classifier}").class_names == ["LABEL_0", "LABEL_1", "LABEL_2"]
    with pytest.raises(TexplainError) as error:
        load_classifier(f"hf:{evil_classifier}")
    assert not (tmp_path / "PWNED").exists()
    assert re.search(r"config.json names Python code.*--trust-code", str(error.value))


def test_a_classifier_folder_naming_an_hf_folder_with_its_own_code_is_refused(evil_classifier, tmp_path, answer_yes):
    folder = hostile_classifier(tmp_path / "recipe", tmp_path / "unused", spec=f"hf:{evil_classifier}", num_labels=3)
    with pytest.raises(TexplainError) as error:
        load_classifier(str(folder))
    assert not (tmp_path / "PWNED").exists()
    assert re.search(r"evil-vit.*config.json names Python code.*--trust-code", str(error.value))
    assert load_classifier(f"hf:{evil_classifier}", trust_code=True).module.__class__.__name__ == "EvilModel"
    assert (tmp_path / "PWNED").exists()


def test_an_image_processor_with_its_own_code_is_refused(hf_classifier, tmp_path, answer_yes):
    folder = tmp_path / "vit"
    shutil.copytree(hf_classifier, folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["auto_map"] = {"AutoImageProcessor": "evil.EvilProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(TexplainError, match=r"preprocessor_config.json names Python code.*--trust-code"):
        load_classifier(f"hf:{folder}")


# 11. hide-foreground writes inside its --out only, and never over an image, a mask or its listing.

@pytest.fixture()
def hiding(images, tmp_path):
    """``set/imgs/a.jpg`` (listed) beside ``set/imgs/a.png`` (not listed), and a mask for ``a``; returns the root."""
    from PIL import Image

    (tmp_path / "set" / "imgs").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    Image.open(images[0]).convert("RGB").save(tmp_path / "set" / "imgs" / "a.jpg")
    Image.open(images[1]).convert("RGB").save(tmp_path / "set" / "imgs" / "a.png")
    Image.new("L", Image.open(images[0]).size, 255).save(tmp_path / "masks" / "a.png")
    return tmp_path


def listing(root: Path, **row) -> Path:
    (root / "set" / "labels.jsonl").write_text(json.dumps({"path": "imgs/a.jpg", "label": "bird", **row}))
    return root / "set" / "labels.jsonl"


def snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("split,message", [("../../../set/imgs", "split '../../../set/imgs'"),
                                           ("../../../x", "split '../../../x'"), ("{root}/abs", "split '{root}/abs'"),
                                           ("..", "split '..'"), ("masks", "masks/a.png")])
def test_hide_foreground_writes_nothing_outside_out_nor_over_an_input(hiding, capsys, split, message):
    split, message = split.format(root=hiding), message.format(root=hiding)
    out = hiding / "deep" / "er" / "out" if split != "masks" else hiding  # ../../../ from out is the root
    source = listing(hiding, split=split)
    before = snapshot(hiding)
    code, err = run(["hide-foreground", source, "--masks", hiding / "masks", "--out", out], capsys)
    one_line_error(code, err, message)
    assert snapshot(hiding) == before


def test_hide_foreground_never_replaces_its_own_listing(hiding, capsys):
    source = listing(hiding)
    before = source.read_bytes()
    code, err = run(["hide-foreground", source, "--masks", hiding / "masks", "--out", hiding / "set"], capsys)
    one_line_error(code, err, "labels.jsonl", "--out")
    assert source.read_bytes() == before


def test_hide_foreground_never_writes_through_a_link_out_of_out(hiding, capsys):
    (hiding / "out").mkdir()
    (hiding / "out" / "all").symlink_to(hiding / "set" / "imgs")
    source = listing(hiding)
    before = snapshot(hiding / "set")
    code, err = run(["hide-foreground", source, "--masks", hiding / "masks", "--out", hiding / "out"], capsys)
    one_line_error(code, err, "outside --out")
    assert snapshot(hiding / "set") == before


def test_a_mask_that_is_not_an_image_is_one_line(hiding, capsys):
    (hiding / "masks" / "a.png").write_bytes(b"not a png")
    code, err = run(["hide-foreground", listing(hiding), "--masks", hiding / "masks", "--out", hiding / "out"], capsys)
    one_line_error(code, err, "masks/a.png", "not a readable image")


def test_hide_foreground_reads_a_sixteen_bit_mask_by_its_levels(hiding, capsys):
    import numpy as np
    from PIL import Image

    size = Image.open(hiding / "set" / "imgs" / "a.jpg").size
    levels = np.zeros((size[1], size[0]), dtype=np.uint16)
    levels[:, : size[0] // 2] = 1  # foreground on the left, at the lowest 16-bit level
    Image.fromarray(levels).save(hiding / "masks" / "a.png")
    code, err = run(["hide-foreground", listing(hiding), "--masks", hiding / "masks", "--out", hiding / "out"], capsys)
    assert code == 0, err
    hidden = np.array(Image.open(hiding / "out" / "all" / "a.png"))
    assert (hidden[:, : size[0] // 2] == 0).all() and hidden[:, size[0] // 2 :].any()


# 12. texplain query reads the results folder and nothing else.

@pytest.mark.parametrize("sql,refused", [
    ("copy (select 1 as x) to '{tmp}/copied.csv'", "COPY"),
    ("select * from results; copy (select 1 as x) to '{tmp}/copied.csv'", "one statement"),
    ("copy (select 1 as x) to '{part}' (format parquet, use_tmp_file false)", "COPY"),
    ("select * from read_text('/etc/hostname')", "disabled by configuration"),
    ("select * from read_csv('{tmp}/secret.csv')", "disabled by configuration"),
    ("select * from glob('/etc/*')", "disabled by configuration"),
    ("attach '{tmp}/other.duckdb' as other", "ATTACH"),
    ("install httpfs", "LOAD"),
    ("load httpfs", "LOAD"),
    ("set enable_external_access = true", "SET"),
    ("select set_config('enable_external_access', 'true')", "does not exist"),
    ("", "no SQL given"),
])
def test_query_sql_reaches_nothing_outside_the_results(results, tmp_path, capsys, monkeypatch, sql, refused):
    from texplain.analysis.results import ResultsFolder

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "secret.csv").write_text("a\n1\n")
    part = ResultsFolder.open(results).part_paths()[0]
    before = part.read_bytes()
    code, err = run(["query", results, sql.format(tmp=tmp_path, part=part)], capsys)
    one_line_error(code, err, refused)
    assert part.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.csv"]  # no copied.csv, other.duckdb, home/.duckdb


def test_query_still_reads_its_views(results, capsys):
    from texplain.analysis.query import run_query

    assert cli.main(["query", str(results), "select count(*) as n from results", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n4\n"
    assert run_query(results, "select count(*) from words where count > 0").rows[0][0] > 0
    assert run_query(results, "describe results").rows[0][0] == "image"


# 13. --json replaces only a regular file: never a device, FIFO, link or folder, and says so before any work.

def special(tmp_path: Path, kind: str) -> Path:
    """A path in ``tmp_path`` that is a ``kind`` of node: a device (like /dev/null), a FIFO, a link or a folder."""
    import stat

    path = tmp_path / "node"
    if kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs CAP_MKNOD")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symbolic link":
        (tmp_path / "elsewhere.json").write_text("{}")
        path.symlink_to(tmp_path / "elsewhere.json")
    else:
        path.mkdir()
    return path


def rating_answers(tmp_path: Path) -> Path:
    path = tmp_path / "answers.csv"
    path.write_text("rater,item,image,rank,word,predicted_class,relevant,top_word_matches_class\n"
                    "r,1,x.png,1,bird,bird,1,1\n")
    return path


@pytest.mark.parametrize("kind", ["device", "FIFO", "symbolic link", "folder"])
@pytest.mark.parametrize("command", [
    ["rating-score", "{answers}", "--json", "{node}"],
    ["evaluate", "--translator", "t", "--captions", "c.jsonl", "--json", "{node}"],
    ["mitigate", "--demo", "d", "--out", "{tmp}/m", "--json", "{node}"],
])
def test_json_over_anything_but_a_regular_file_is_refused_first(tmp_path, capsys, no_models, alarm, kind, command):
    node = special(tmp_path, kind)
    before = os.lstat(node)
    args = [a.format(answers=rating_answers(tmp_path), node=node, tmp=tmp_path) for a in command]
    code, err = run(args, capsys)
    one_line_error(code, err, str(node), f"is a {kind}")
    after = os.lstat(node)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert not (tmp_path / "m").exists()


def test_json_over_a_regular_file_replaces_it(tmp_path, capsys):
    (tmp_path / "scores.json").write_text("old")
    code, err = run(["rating-score", rating_answers(tmp_path), "--json", tmp_path / "scores.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "scores.json").read_text())["pooled"]["images"] == 1


# 14. The top level: the user's errors are one line; a bug keeps its traceback; TEXPLAIN_DEBUG=1 shows every one.

def raising(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


@pytest.mark.parametrize("exc,shown", [
    (ValueError("bad value\nmore detail"), "bad value (TEXPLAIN_DEBUG=1 shows where it came from)"),
    (OSError(errno.EACCES, "Permission denied", "/some/file"), "/some/file: Permission denied (TEXPLAIN_DEBUG"),
    (json.JSONDecodeError("Expecting value", "x", 0), "Expecting value: line 1 column 1"),
])
def test_an_oserror_or_valueerror_from_input_is_one_line(results, capsys, monkeypatch, exc, shown):
    import texplain.analysis.query

    monkeypatch.delenv("TEXPLAIN_DEBUG", raising=False)
    monkeypatch.setattr(texplain.analysis.query, "run_query", raising(exc))
    code, err = run(["query", results, "select 1"], capsys)
    one_line_error(code, err, shown)
    assert len(err) == 1


@pytest.mark.parametrize("exc", [KeyError("image"), TypeError("unsupported operand"), AttributeError("x")])
def test_a_bug_keeps_its_traceback(results, capsys, monkeypatch, exc):
    import texplain.analysis.query

    monkeypatch.setattr(texplain.analysis.query, "run_query", raising(exc))
    with pytest.raises(type(exc)):
        cli.main(["query", str(results), "select 1"])


@pytest.mark.parametrize("exc", [ValueError("bad value"), OSError(errno.ENOENT, "No such file"), TexplainError("bad")])
def test_texplain_debug_shows_every_traceback(results, monkeypatch, exc):
    import texplain.analysis.query

    monkeypatch.setenv("TEXPLAIN_DEBUG", "1")
    monkeypatch.setattr(texplain.analysis.query, "run_query", raising(exc))
    with pytest.raises(type(exc)):
        cli.main(["query", str(results), "select 1"])


def test_texplain_debug_traceback_from_a_real_process(results, tmp_path):
    command = [sys.executable, "-m", "texplain", "query", str(tmp_path / "none"), "select 1"]
    quiet = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TEXPLAIN_DEBUG": "0"})
    assert quiet.returncode == 2 and quiet.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none'}: not a results folder (no manifest.json); make one with texplain explain-dataset"]
    loud = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TEXPLAIN_DEBUG": "1"})
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "TexplainError" in loud.stderr


# 15. Damaged checkpoints, results folders and options: one line each, exit 2.

@pytest.mark.parametrize("config,message", [
    ({"hidden": "abc"}, "hidden must be a whole number, not 'abc'"),
    ({"hidden": 1e12}, "hidden must be a whole number, not 1000000000000.0"),
    ({"hidden": 10**12}, "does not fit the shapes"),
    ({"prefix_len": 10**15, "mode": "token"}, "does not fit the shapes"),
    ({"residual": "yes"}, "residual must be true or false"),
    ({"mode": ["token"]}, "translator mode"),
])
def test_a_translator_config_with_bad_values_is_one_line(models, images, tmp_path, capsys, config, message):
    translator = copy_translator(models, tmp_path / "translator", config=config)
    code, err = run(["explain", images[0], "--translator", translator, "--out", tmp_path / "out", *FAST], capsys)
    one_line_error(code, err, "translator.json", message)


@pytest.mark.parametrize("damage,message", [
    (lambda f: (f / "config.json").write_text(json.dumps({**json.loads((f / "config.json").read_text()), "n_layer": "two"})),
     "n_layer"),
    (lambda f: truncate(f / "model.safetensors"), "cannot load"),
    (lambda f: truncate(f / "model.safetensors", 0.0), "cannot load"),
    (lambda f: (f / "config.json").write_text("[" * 100_000), "config.json"),
])
def test_a_damaged_lm_folder_is_one_line(models, tiny_lm_folder, images, tmp_path, capsys, damage, message):
    lm = tmp_path / "lm"
    shutil.copytree(tiny_lm_folder, lm)
    damage(lm)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": str(images[0]), "caption": "a bird", "split": "train"}))
    code, err = run(["train", "-c", models / "classifier", "--lm", lm, "--captions", tmp_path / "captions.jsonl",
                     "--out", tmp_path / "t"], capsys)
    one_line_error(code, err, str(lm), message)


def test_image_names_as_long_as_a_file_name_allows_are_explained(models, images, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a" * 247 + ".png", "b" * 251 + ".png", "c" * 251 + ".png", "c" * 251 + ".jpg"]
    for i, name in enumerate(names):
        Image.open(images[i]).convert("RGB").save(folder / name)
    code, err = run(["explain", folder, "--translator", models / "translator", "--out", tmp_path / "out", *FAST], capsys)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert sorted(Path(r["image"]).name for r in records) == sorted(names)
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def copy_results(results: Path, folder: Path) -> Path:
    shutil.copytree(results, folder, ignore=shutil.ignore_patterns(".texplain.lock"))
    return folder


def damage_part(folder: Path, how: str) -> Path:
    part = folder / "parts" / "part-00001.parquet"
    if how == "deleted":
        part.unlink()
    elif how == "empty":
        part.write_bytes(b"")
    elif how == "truncated":
        truncate(part)
    else:  # corrupt: the middle overwritten, the footer intact
        data = bytearray(part.read_bytes())
        data[8 : len(data) // 2] = bytes(len(data) // 2 - 8)
        part.write_bytes(bytes(data))
    return part


@pytest.mark.parametrize("how", ["deleted", "empty", "truncated", "corrupt"])
def test_a_damaged_part_is_one_line_for_analyse_and_query(results, tmp_path, capsys, how):
    folder = copy_results(results, tmp_path / "results")
    damage_part(folder, how)
    code, err = run(["analyse", folder, "--out", tmp_path / "report"], capsys)
    one_line_error(code, err, "part-00001.parquet", "explain-dataset")
    code, err = run(["query", folder, "select count(*) from results"], capsys)
    one_line_error(code, err, "part-00001.parquet", "explain-dataset")


@pytest.mark.parametrize("how", ["deleted", "empty", "truncated", "corrupt"])
def test_resuming_redoes_a_damaged_part(explainer, items, results, tmp_path, how):
    from texplain.analysis.explain_dataset import explain_dataset
    from texplain.analysis.results import ResultsFolder

    folder = copy_results(results, tmp_path / "results")
    damage_part(folder, how)
    run = explain_dataset(explainer, items, folder, dataset_config(), progress=False)
    assert run.written == 2 and run.total == 4
    redone = ResultsFolder.open(folder)
    assert sorted(redone.done_images()) == sorted(str(i.path.resolve()) for i in items)
    assert [p["file"] for p in redone.manifest["parts"]] == ["parts/part-00000.parquet", "parts/part-00001.parquet"]
    assert redone.table().num_rows == 4


@pytest.mark.parametrize("manifest,message", [
    ("[" * 100_000, "bad JSON"),
    ("[]", "not a results manifest (a JSON list"),
    ("7", "not a results manifest (a JSON int"),
    ('{"format": 1, "settings": {}, "parts": "x", "skipped": [], "complete": false}', "parts is not a list"),
    ('{"format": 1, "settings": {}, "parts": [{"file": "parts/part-00000.parquet", "rows": "2"}], "skipped": [],'
     ' "complete": false}', "parts is not a list"),
    ('{"format": 1, "settings": [], "parts": [], "skipped": [], "complete": false}', "settings is not an object"),
    ('{"format": 1, "settings": {}, "parts": [], "skipped": [1], "complete": false}', "skipped is not a list"),
    ('{"format": 1, "settings": {}, "parts": [], "skipped": [], "complete": "yes"}', "complete is not true or false"),
])
def test_a_damaged_manifest_is_one_line(results, tmp_path, capsys, manifest, message):
    folder = copy_results(results, tmp_path / "results")
    (folder / "manifest.json").write_text(manifest)
    for command in (["analyse", folder, "--out", tmp_path / "report"], ["query", folder, "select 1"]):
        code, err = run(command, capsys)
        one_line_error(code, err, "manifest.json", message)


def test_a_manifest_part_outside_the_folder_is_refused(explainer, items, results, tmp_path, capsys):
    from texplain.analysis.explain_dataset import explain_dataset

    other = copy_results(results, tmp_path / "other")
    folder = copy_results(results, tmp_path / "results")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["parts"][1]["file"] = "../other/parts/part-00000.parquet"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for command in (["analyse", folder, "--out", tmp_path / "report"], ["query", folder, "select * from results"]):
        code, err = run(command, capsys)
        one_line_error(code, err, "manifest.json", "../other/parts/part-00000.parquet", "not a part file")
    with pytest.raises(TexplainError, match="not a part file of this folder"):
        explain_dataset(explainer, items, folder, dataset_config(), progress=False)
    assert sorted(p.name for p in (other / "parts").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]


def test_a_part_through_a_link_out_of_the_folder_is_refused(results, tmp_path, capsys):
    other = copy_results(results, tmp_path / "other")
    folder = copy_results(results, tmp_path / "results")
    shutil.rmtree(folder / "parts")
    (folder / "parts").symlink_to(other / "parts")
    code, err = run(["query", folder, "select * from results"], capsys)
    one_line_error(code, err, "manifest.json", "not a part file")


@pytest.mark.parametrize("prior,message", [("", "bad JSON"), ("[" * 100_000, "bad JSON"), ("[]", "prior.json"),
                                           ('{"counts": {"config": {}, "n_sentences": 1, "document_counts": {}},'
                                            ' "mentions": {"bird": "x"}}', "prior.json")])
def test_a_damaged_prior_is_one_line(results, tmp_path, capsys, prior, message):
    folder = copy_results(results, tmp_path / "results")
    (folder / "prior.json").write_text(prior)
    code, err = run(["analyse", folder, "--out", tmp_path / "report"], capsys)
    one_line_error(code, err, "prior.json", message)


EXPLAIN = ["explain", "x.jpg", "--translator", "t", "--out", "{tmp}/o"]


@pytest.mark.parametrize("args,message", [
    ([*EXPLAIN, "--seed", "99999999999999999999"], "--seed"),
    ([*EXPLAIN, "--seed", "-1"], "--seed"),
    (["mitigate", "--demo", "d", "--out", "{tmp}/m", "--seed", str(2**64)], "--seed"),
    (["train", "-c", "c", "--lm", "l", "--captions", "c.jsonl", "--out", "{tmp}/t", "--seed", str(2**40)], "--seed"),
    ([*EXPLAIN, "--device", "tpu"], "'tpu': choose cpu, cuda, cuda:N or mps"),
    ([*EXPLAIN, "--device", "cuda"], "cuda: this machine has no CUDA GPU"),
    ([*EXPLAIN, "--device", "cuda:1"], "cuda:1: this machine has no CUDA GPU"),
    (["train", "-c", "c", "--lm", "l", "--captions", "c.jsonl", "--out", "{tmp}/t", "--device", "tpu"], "'tpu'"),
    (["mitigate", "--demo", "d", "--out", "{tmp}/m", "--device", "cuda"], "no CUDA GPU"),
    ([*EXPLAIN, "--samples", "99999999999999999999"], "at most 100,000"),
    ([*EXPLAIN, "--samples", "auto:100001"], "at most 100,000"),
    (["mitigate", "--demo", "d", "--out", "{tmp}/m", "--samples", "1000000000"], "at most 100,000"),
])
def test_out_of_range_seeds_devices_and_sample_counts_are_one_line_before_any_work(
        tmp_path, capsys, monkeypatch, no_models, args, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run([a.format(tmp=tmp_path) for a in args], capsys)
    one_line_error(code, err, message)
    assert not any(tmp_path.iterdir())


def test_explain_dataset_on_ray_leaves_the_device_to_the_actors(tmp_path, capsys, monkeypatch):
    import texplain.analysis.ray_engine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(texplain.analysis.ray_engine.RayEngine, "connect", raising(TexplainError("reached the cluster")))
    for order in (["--device", "cuda", "--engine", "ray"], ["--engine", "ray", "--device", "cuda"]):
        code, err = run(["explain-dataset", "labels.jsonl", "--translator", "t", "--out", tmp_path / "r", *order], capsys)
        one_line_error(code, err, "reached the cluster")


@pytest.mark.parametrize("kind", ["file", "read-only folder"])
def test_train_checks_its_out_before_any_work(tmp_path, capsys, monkeypatch, kind):
    import texplain.models.classifiers

    monkeypatch.setattr(texplain.models.classifiers, "load_classifier", refuse)
    if kind == "file":
        out = tmp_path / "a-file"
        out.write_text("")
    else:
        out = unwritable(tmp_path)
    code, err = run(["train", "-c", "c", "--lm", "l", "--captions", "c.jsonl", "--out", out], capsys)
    one_line_error(code, err, "cannot write")


# 16. Wrong results, no error: now right.

def test_explain_run_twice_into_its_own_folder_explains_only_the_inputs(models, images, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.open(images[i]).save(folder / f"p{i}.png")
    for _ in range(2):
        code, err = run(["explain", folder, "--translator", models / "translator", "--out", folder / "out", *FAST],
                        capsys)
        assert code == 0, err
    records = [json.loads(p.read_text()) for p in (folder / "out").glob("*.json")]
    assert sorted(Path(r["image"]).name for r in records) == ["p0.png", "p1.png"]


def class_folders(images: list[Path], root: Path) -> Path:
    from PIL import Image

    for i, path in enumerate(images[:4]):
        (root / f"class_{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.open(path).save(root / f"class_{i % 2}" / f"p{i}.png")
    return root


def test_explain_dataset_into_its_own_class_folders_resumes_without_reading_its_results(models, images, tmp_path, capsys):
    from texplain.analysis.results import ResultsFolder

    source = class_folders(images, tmp_path / "photos")
    args = ["explain-dataset", source, "--translator", models / "translator", "--out", source / "results",
            "--no-wordnet", "--prior", "none", "--chunk-size", "2", *FAST]
    assert run(args, capsys)[0] == 0
    code, err = run(args, capsys)
    assert code == 0, err
    assert len(ResultsFolder.open(source / "results").done_images()) == 4


def test_hide_foreground_into_its_own_class_folders_twice_hides_only_the_inputs(images, tmp_path, capsys):
    from PIL import Image

    source = class_folders(images, tmp_path / "photos")
    (tmp_path / "masks").mkdir()
    for i in range(4):
        Image.new("L", Image.open(images[i]).size, 255).save(tmp_path / "masks" / f"p{i}.png")
    for _ in range(2):
        code, err = run(["hide-foreground", source, "--masks", tmp_path / "masks", "--out", source / "hidden"], capsys)
        assert code == 0, err
    assert len((source / "hidden" / "labels.jsonl").read_text().splitlines()) == 4


def test_train_resumes_with_the_classifier_named_by_another_path(models, images, tiny_lm_folder, tmp_path, capsys,
                                                                  monkeypatch):
    from conftest import CAPTIONS

    shutil.copytree(models / "classifier", tmp_path / "demo" / "classifier")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps({"image": str(p), "caption": c, "split": "train"})
                                                       for p, c in zip(images, CAPTIONS)))
    train = ["train", "--lm", tiny_lm_folder, "--captions", "captions.jsonl", "--out", "t", "--batch-size", "4",
             "--hidden", "16", "--prefix-len", "3"]
    assert run([*train, "-c", "demo/classifier", "--epochs", "1"], capsys)[0] == 0
    code, err = run([*train, "-c", tmp_path / "demo" / "classifier", "--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    state = torch.load(tmp_path / "t" / "checkpoint" / "state.pt", weights_only=True)
    assert state["epoch"] == 1  # epochs 0 and 1: the second run went on from the first


FORMULAS = ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx"]


def test_rating_export_writes_no_spreadsheet_formula_and_reads_its_answers_back(images, tmp_path, capsys):
    import csv
    import io

    from PIL import Image

    from texplain.evaluation.rating import read_answers

    Image.open(images[0]).save(tmp_path / "=1+2.png")
    record = {"image": str(tmp_path / "=1+2.png"), "top_words": [{"word": w} for w in [*FORMULAS, "bird"]],
              "prediction": [{"name": "=HYPERLINK(\"http://x\")"}]}
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "r.json").write_text(json.dumps(record))
    code, err = run(["rating-export", tmp_path / "records", "--out", tmp_path / "rating"], capsys)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO((tmp_path / "rating" / "ratings.csv").read_text())))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t")) for row in rows for cell in row)
    assert [row[2] for row in rows[1:]] == ["'=1+2.png"] * 6
    filled = [rows[0]] + [[cell if i != 6 else "1" for i, cell in enumerate(row)] for row in rows[1:]]
    with (tmp_path / "filled.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(filled)
    answers = read_answers(tmp_path / "filled.csv")
    assert list(answers.words) == [("1", "=1+2.png")]
    assert sorted(answers.words[("1", "=1+2.png")]) == sorted([*FORMULAS, "bird"])


@pytest.fixture()
def fake_ray(monkeypatch, tmp_path):
    """ray.init recorded instead of run, with no Ray address or token configured and a home of its own."""
    ray = pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    started = {}

    def init(**kwargs):
        started.update(kwargs, token=os.environ.get("RAY_AUTH_TOKEN"))
        Path(kwargs["_temp_dir"], "session_x").mkdir()  # Ray's session folder

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    return started


@pytest.mark.parametrize("short", [True, False])
def test_a_local_ray_instance_keeps_its_files_in_the_results_folder_or_a_private_one(fake_ray, tmp_path, short):
    import tempfile

    from texplain.analysis.ray_engine import RayEngine

    base = Path(tempfile.mkdtemp(prefix="t", dir="/tmp")) if short else tmp_path / ("long" * 20)
    try:
        engine = RayEngine("t", temp_dir=str(base / "results" / ".ray"))
        engine.connect()
        ray_dir = Path(fake_ray["_temp_dir"])
        if short:
            assert ray_dir == base / "results" / ".ray"
        else:  # too long for a socket's name: a private folder instead, never /tmp/ray
            assert ray_dir.parent == Path(tempfile.gettempdir()) and ray_dir.name.startswith("texplain-ray-")
        assert len(fake_ray["token"]) == 64 and not (tmp_path / "home" / ".ray").exists()
        engine.close()
        assert not ray_dir.exists() and "RAY_AUTH_TOKEN" not in os.environ
    finally:
        if short:
            shutil.rmtree(base)


def test_explain_dataset_on_a_local_ray_instance_starts_in_an_empty_results_folder(fake_ray, models, items, tmp_path,
                                                                                     capsys, monkeypatch):
    import tempfile

    import texplain.analysis.explain_dataset

    seen = {}

    def explain_dataset(explainer, items, out, config, features=None, engine=None):
        from texplain.analysis.results import ResultsFolder

        ResultsFolder.open(out, {}, create=True)  # the folder holds Ray's files: still a new results folder
        seen["ray"] = sorted(p.name for p in Path(fake_ray["_temp_dir"]).iterdir())
        raise TexplainError("stopped here")

    monkeypatch.setattr(texplain.analysis.explain_dataset, "explain_dataset", explain_dataset)
    short = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short enough for Ray's socket names
    out = short / "r"
    try:
        code, err = run(["explain-dataset", labels_file(items, tmp_path / "labels.jsonl"), "--translator",
                         models / "translator", "--out", out, "--engine", "ray", "--no-wordnet", "--prior", "none",
                         *FAST], capsys)
        one_line_error(code, err, "stopped here")
        assert fake_ray["_temp_dir"] == str(out / ".ray") and seen["ray"] == ["session_x"]
        assert not (out / ".ray").exists()
    finally:
        shutil.rmtree(short)


def test_every_file_written_gets_the_mode_of_a_new_file(models, images, tiny_lm, tmp_path):
    import stat

    from texplain.models.features import extract_features
    from texplain.models.translator import load_translator, save_translator

    save_translator(load_translator(models / "translator"), tmp_path / "translator")
    save_classifier(load_classifier(str(models / "classifier")), tmp_path / "classifier")
    extract_features(tiny_vit(), [str(p) for p in images[:2]], tmp_path / "features", progress=False)
    (tmp_path / "plain.txt").write_text("")
    expected = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    modes = {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode))
             for p in tmp_path.rglob("*") if p.is_file() and p.name != ".texplain.lock"}
    assert "translator/translator.safetensors" in modes and "classifier/classifier.safetensors" in modes
    assert any(name.startswith("features/shard_") and name.endswith(".safetensors") for name in modes)
    assert set(modes.values()) == {oct(expected)}, modes
