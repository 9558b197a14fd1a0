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
    code, err = run(["mitigate", "--out", tmp_path / "m", "-c", folder, "--data", tmp_path / "labels.jsonl",
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
    from texplain.analysis.explain_dataset import DatasetExplainConfig
    from texplain.generate.explain import ExplainConfig
    from texplain.generate.sampling import SamplingConfig
    from texplain.text.class_vocabulary import ClassWordConfig

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
    (["explain", "x.jpg", "--translator", "t", "--out", "o", "-n", "many"], "-n"),
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

    from texplain.models.features import ExtractionConfig, FeatureStore, extract_features

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
    from texplain.models.features import extract_features
    from texplain.models.translator import Translator, TranslatorConfig
    from texplain.training.translator_training import Phase, TrainConfig, train_translator

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
