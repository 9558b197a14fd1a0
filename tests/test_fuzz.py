"""Property-based fuzzing of the readers of user files: they read, or raise TexplainError, never anything else.

Caption files (TSV, JSONL, CSV, COCO/Karpathy JSON, Flickr token text),
labelled-set listings (CSV, TSV, JSONL, BAR JSON), class-word overrides (JSON,
YAML) and image bytes are generated from their own vocabulary (the column
names and keys the readers look for) mixed with hostile text and raw bytes.
So are the files texplain itself writes and reads back, which a user can
damage or an attacker hand over: a results folder's ``manifest.json``,
``prior.json`` and Parquet parts, a translator's ``translator.json``, an
LM's ``config.json``; and labelled rows whose path-like fields try to lead
``hide-foreground`` out of its folder. There the property is what the user
sees: a correct result, or one line ``error: ...`` with exit code 2, never a
traceback, and nothing written outside the run's folders.
Examples are derandomised, so every run tries the same few hundred files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from analysis_helpers import make_results
from analysis_helpers import settings as results_settings
from texplain import cli
from texplain.analysis.analyse import analyse_results
from texplain.analysis.results import ResultsFolder
from texplain.data.captions import read_captions
from texplain.data.images import load_rgb
from texplain.data.labelled import read_labelled
from texplain.errors import TexplainError
from texplain.text.class_vocabulary import load_overrides

pytestmark = pytest.mark.reliability

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

KEYS = ["image", "caption", "split", "path", "label", "group", "file", "cls", "class", "file_name", "filename",
        "filepath", "text", "title", "id", "image_id", "annotations", "images", "sentences", "raw", "source",
        "add", "remove", "wordnet", "bird", "train", "dev", "test"]
"""The names the readers look for, so that generated files get past their first checks."""

hostile_text = st.one_of(
    st.sampled_from(KEYS),
    st.text(max_size=12),
    st.sampled_from(["", " ", "\x00", "\t", "\r", '"', "'", ",", "\n", "a\x00b", "../../etc/passwd", "/", "~",
                     "\ufeff", "\u2028", "#0", "x.jpg#1", "1" * 5000, "[" * 1200, "2001-02-30",
                     "!!python/object:os.system",
                     "&a", "*a", "{", "[", "- ", ": ", "? ", "%YAML 1.1", "---", "..."]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), hostile_text),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children,
                                               max_size=5)),
    max_leaves=12,
)


def table(separator: str) -> st.SearchStrategy[str]:
    """Rows of fields joined by ``separator``: often a plausible header, then anything."""
    row = st.lists(hostile_text, min_size=0, max_size=5)
    header = st.lists(st.sampled_from(KEYS), min_size=1, max_size=4)
    return st.tuples(header, st.lists(row, max_size=5)).map(
        lambda t: "\n".join(separator.join(fields) for fields in [t[0], *t[1]]))


def json_lines() -> st.SearchStrategy[str]:
    line = st.one_of(json_values.map(json.dumps), hostile_text)
    return st.lists(line, max_size=6).map("\n".join)


def contents(*kinds: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """A file's bytes: one of ``kinds`` as UTF-8, sometimes cut short, or raw bytes."""
    text = st.one_of(*kinds).map(lambda s: s.encode("utf-8", "surrogatepass"))
    cut = st.tuples(text, st.integers(0, 64)).map(lambda t: t[0][: max(0, len(t[0]) - t[1])])
    return st.one_of(text, cut, st.binary(max_size=64))


def write(folder, name: str, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path


def reads_or_refuses(read, *args) -> None:
    """The property: ``read(*args)`` returns, or raises TexplainError; anything else fails the test."""
    try:
        read(*args)
    except TexplainError:
        pass


@settings(FUZZ, max_examples=150)
@given(suffix=st.sampled_from([".tsv", ".csv", ".jsonl", ".json", ".txt"]),
       data=contents(table("\t"), table(","), json_lines(), json_values.map(json.dumps)),
       split=st.sampled_from([None, "train"]))
@example(suffix=".jsonl", data=b"1" * 5000, split=None)  # an integer too long for Python
@example(suffix=".json", data=b"[" * 100_000, split=None)  # nesting too deep for Python
@example(suffix=".json", data=b'{"images": [{"id": [1], "file_name": "x.jpg"}], "annotations": []}', split=None)
@example(suffix=".csv", data=b"image,caption\n" + b"a" * 200_000 + b",b", split=None)  # a field over csv's limit
def test_caption_files(tmp_path, suffix, data, split):
    reads_or_refuses(read_captions, write(tmp_path, f"captions{suffix}", data), None, split)


@settings(FUZZ, max_examples=100)
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json"]),
       data=contents(table(","), table("\t"), json_lines(), json_values.map(json.dumps)))
@example(suffix=".jsonl", data=b"1" * 5000)
@example(suffix=".csv", data=b"path,label\n" + b"a" * 200_000 + b",b")
def test_labelled_set_files(tmp_path, suffix, data):
    write(tmp_path, "x.jpg", b"")
    reads_or_refuses(read_labelled, write(tmp_path, f"labels{suffix}", data))


yaml_text = st.lists(st.tuples(hostile_text, st.sampled_from([": ", ":\n  - ", ": [", ": {", "\n- ", " "]),
                               hostile_text), max_size=5).map(lambda rows: "\n".join("".join(r) for r in rows))


@settings(FUZZ, max_examples=100)
@given(suffix=st.sampled_from([".json", ".yaml"]),
       data=contents(json_values.map(json.dumps), yaml_text, st.just("bird: [wing]\n")))
@example(suffix=".json", data=b"\x80")  # not UTF-8
@example(suffix=".yaml", data=b"bird: 2001-02-30")  # a date that is no date
@example(suffix=".yaml", data=b"[" * 1200)  # nesting too deep for Python
def test_class_word_files(tmp_path, suffix, data):
    reads_or_refuses(load_overrides, write(tmp_path, f"words{suffix}", data))


def encoded(format: str, mode: str, **options) -> bytes:
    image = Image.new(mode, (9, 7), 128 if mode in ("L", "I;16", "I", "F", "1", "P") else (10, 200, 30)[: len(mode)])
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


IMAGES = [encoded("PNG", "RGB"), encoded("PNG", "I;16"), encoded("PNG", "P"), encoded("JPEG", "RGB"),
          encoded("JPEG", "CMYK"), encoded("GIF", "P"), encoded("BMP", "RGB"), encoded("TIFF", "F"),
          encoded("WEBP", "RGBA"), encoded("TIFF", "RGB", compression="tiff_deflate")]


@st.composite
def damaged(draw) -> bytes:
    """A real encoded image, cut short or with a few bytes changed."""
    data = bytearray(draw(st.sampled_from(IMAGES)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(FUZZ, max_examples=150)
@given(suffix=st.sampled_from([".png", ".jpg", ".gif", ".tif", ".webp", ".bmp"]),
       data=st.one_of(damaged(), st.binary(max_size=128)))
def test_image_bytes(tmp_path, suffix, data):
    try:
        image = load_rgb(write(tmp_path, f"image{suffix}", data))
    except TexplainError:
        return
    assert image.mode == "RGB"


# Files texplain writes and reads back: what a user sees is a correct result or one line, exit 2.

QUICK = settings(FUZZ, deadline=timedelta(seconds=10))
"""For the examples below: each reads a small folder, so one taking 10 s has hung."""


def one_line_or_done(capsys, args: list) -> int:
    """``texplain ARGS``: exit 0, or exit 2 with one line ``error: ...``; a traceback (an exception) fails the test."""
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 2), err
    if code == 2:
        assert len(err) == 1 and err[0].startswith("error: "), err
    return code


def files(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: what a write would change."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory) -> Path:
    """A hand-made results folder: three parts of two rows, a prior (tests/analysis_helpers.py)."""
    folder = tmp_path_factory.mktemp("fuzz-results") / "results"
    make_results(folder)
    return folder


def sandbox(tmp_path_factory, results_folder: Path) -> Path:
    """A fresh copy of the results folder beside another one (``other``) that nothing may touch (one per example)."""
    root = tmp_path_factory.mktemp("sandbox")
    shutil.copytree(results_folder, root / "results")
    shutil.copytree(results_folder, root / "other")
    return root


PART_NAMES = st.one_of(
    st.sampled_from(["parts/part-00000.parquet", "parts/part-00001.parquet", "parts/part-00002.parquet",
                     "parts/part-00009.parquet", "../other/parts/part-00000.parquet", "parts/../../other/x.parquet",
                     "/etc/hostname", "./parts/part-00000.parquet", "parts//part-00001.parquet", "parts/part-1.parquet",
                     "parts/part-00000.parquet\x00", "PARTS/part-00000.parquet", "manifest.json", ""]),
    hostile_text,
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        "format": st.one_of(st.just(1), json_values),
        "settings": st.one_of(st.just(results_settings()), json_values),
        "parts": st.one_of(st.lists(st.fixed_dictionaries({"file": PART_NAMES, "rows": st.one_of(st.integers(-1, 3), json_values)}),
                                    max_size=4), json_values),
        "skipped": st.one_of(st.lists(st.fixed_dictionaries({"image": hostile_text, "reason": hostile_text}), max_size=2),
                             json_values),
        "complete": st.one_of(st.booleans(), json_values),
    },
)


def part_rows(folder: Path, manifest: dict) -> int:
    """The rows of the part files a manifest lists, as pyarrow reads them."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(folder / p["file"]).num_rows for p in manifest["parts"])


@settings(QUICK, max_examples=60)
@given(data=contents(manifests.map(json.dumps), json_values.map(json.dumps)))
@example(data=b"[" * 100_000)
@example(data=b"[]")
@example(data=b"7")
@example(data=json.dumps({"format": 1, "settings": {}, "parts": [{"file": "../other/parts/part-00000.parquet", "rows": 2}],
                          "skipped": [], "complete": True}).encode())
def test_results_manifests(tmp_path_factory, results_folder, capsys, data):
    root = sandbox(tmp_path_factory, results_folder)
    folder = root / "results"
    (folder / "manifest.json").write_bytes(data)
    before = files(root / "other")
    if one_line_or_done(capsys, ["query", folder, "select count(*) as n from results", "--format", "json"]) == 0:
        assert json.loads(capsys.readouterr().out)["n"] == part_rows(folder, json.loads(data))
    reads_or_refuses(lambda: analyse_results(ResultsFolder.open(folder)))
    # resuming into the folder: it may drop damaged parts there, and only there
    reads_or_refuses(ResultsFolder.open, folder, ResultsFolder.open(results_folder).settings, True)
    assert files(root / "other") == before


recorded_settings = st.fixed_dictionaries({}, optional={
    **{key: st.one_of(st.just(value), json_values) for key, value in results_settings().items()},
    "words": st.one_of(st.fixed_dictionaries({}, optional={"top_k": st.one_of(st.integers(-1, 5), json_values),
                                                           "min_length": st.one_of(st.integers(-1, 5), json_values),
                                                           "extra_stopwords": json_values,
                                                           "lemmatise": json_values}), json_values),
})


@settings(QUICK, max_examples=60)
@given(recorded=st.one_of(recorded_settings, json_values))
@example(recorded={**results_settings(), "words": "x"})
@example(recorded={**results_settings(), "class_names": 7})
def test_results_settings(results_folder, tmp_path, recorded):
    folder = tmp_path / "results"
    shutil.copytree(results_folder, folder, dirs_exist_ok=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "settings": recorded}))
    reads_or_refuses(lambda: analyse_results(ResultsFolder.open(folder)))


def damaged_part(draw_data: bytes, part: Path, how: str) -> None:
    if how == "bytes":
        part.write_bytes(draw_data)
    elif how == "cut":
        part.write_bytes(part.read_bytes()[: len(draw_data)])
    elif how == "overwrite":
        data = bytearray(part.read_bytes())
        data[4 : 4 + len(draw_data)] = draw_data[: max(0, len(data) - 8)]
        part.write_bytes(bytes(data[: len(part.read_bytes())]))
    elif how == "foreign":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"image": ["x", "y"], "other": [1, 2]}), part)
    else:
        part.unlink()


@settings(QUICK, max_examples=40)
@given(how=st.sampled_from(["bytes", "cut", "overwrite", "foreign", "deleted"]), data=st.binary(max_size=600),
       number=st.integers(0, 2))
def test_results_parts(tmp_path_factory, results_folder, capsys, how, data, number):
    folder = sandbox(tmp_path_factory, results_folder) / "results"
    damaged_part(data, folder / "parts" / f"part-{number:05d}.parquet", how)
    one_line_or_done(capsys, ["query", folder, "select image, words from results"])
    one_line_or_done(capsys, ["query", folder, "--word", "water"])
    results = ResultsFolder.open(folder, ResultsFolder.open(results_folder).settings, create=True)  # damaged: dropped
    assert results.table().num_rows == sum(p["rows"] for p in results.manifest["parts"])
    assert 4 <= results.table().num_rows <= 6


counts = st.fixed_dictionaries({}, optional={
    "config": st.one_of(st.just({}), json_values),
    "n_sentences": st.one_of(st.integers(-1, 50), json_values),
    "document_counts": st.one_of(st.dictionaries(st.sampled_from(["man", "water", "bird", "x"]),
                                                 st.one_of(st.integers(-1, 60), json_values), max_size=3), json_values),
})
priors = st.fixed_dictionaries({}, optional={
    "kinds": st.one_of(st.just(["blank"]), json_values),
    "counts": st.one_of(counts, json_values),
    "mentions": st.one_of(st.dictionaries(st.sampled_from(["bird", "car", "x"]), st.one_of(st.integers(-1, 9), json_values),
                                          max_size=2), json_values),
    "by_kind": st.one_of(st.dictionaries(st.sampled_from(["blank", "lm"]),
                                         st.fixed_dictionaries({"counts": counts}, optional={"mentions": json_values}),
                                         max_size=2), json_values),
})


@settings(QUICK, max_examples=80)
@given(data=contents(priors.map(json.dumps), json_values.map(json.dumps)))
@example(data=b"")
@example(data=b"[" * 100_000)
def test_results_priors(results_folder, tmp_path, data):
    folder = tmp_path / "results"
    shutil.copytree(results_folder, folder, dirs_exist_ok=True)
    (folder / "prior.json").write_bytes(data)
    reads_or_refuses(lambda: analyse_results(ResultsFolder.open(folder)))


@pytest.fixture(scope="module")
def translator_folder(tmp_path_factory) -> Path:
    """A small translator checkpoint (features 4 x 8 → 2 slots of 8), made without models."""
    from texplain.models.config import TranslatorConfig
    from texplain.models.translator import Provenance, Translator, save_translator

    folder = tmp_path_factory.mktemp("fuzz-translator") / "translator"
    config = TranslatorConfig(in_tokens=4, in_dim=8, lm_dim=8, prefix_len=2, hidden=8, mode="token")
    save_translator(Translator(config, Provenance("timm:test_vit", "norm", "gpt2")), folder)
    return folder


SIZES = st.one_of(st.integers(-2, 10), st.sampled_from([8, 2**31, 10**12, 10**15, 2**63]), json_values)
translator_configs = st.fixed_dictionaries({}, optional={
    **{name: SIZES for name in ("in_tokens", "in_dim", "lm_dim", "prefix_len", "hidden")},
    "mode": st.one_of(st.sampled_from(["auto", "pooled", "token", "resampler", "flatten"]), json_values),
    **{name: st.one_of(st.floats(-1, 2), json_values) for name in ("dropout", "feature_dropout")},
    **{name: st.one_of(st.booleans(), json_values) for name in ("residual", "start_token")},
})
provenances = st.fixed_dictionaries({}, optional={
    name: st.one_of(st.sampled_from(["timm:test_vit", "gpt2", "../lm", "/", "a:b"]), json_values)
    for name in ("classifier", "feature_layer", "lm", "lm_recipe", "extra")
})


@settings(QUICK, max_examples=80)
@given(config=st.one_of(translator_configs, translator_configs, json_values), provenance=st.one_of(provenances, json_values),
       keep=st.booleans())
@example(config={"hidden": "abc"}, provenance={}, keep=True)
@example(config={"hidden": 1e12}, provenance={}, keep=True)
@example(config={"hidden": 10**12, "in_dim": 10**12}, provenance={}, keep=True)
def test_translator_configs(translator_folder, tmp_path, config, provenance, keep):
    from texplain.models.translator import load_translator

    folder = tmp_path / "translator"
    shutil.copytree(translator_folder, folder, dirs_exist_ok=True)
    record = json.loads((folder / "translator.json").read_text())
    if keep and isinstance(config, dict) and isinstance(provenance, dict):
        record["config"].update(config)
        record["provenance"].update(provenance)
    else:
        record = {"config": config, "provenance": provenance}
    (folder / "translator.json").write_text(json.dumps(record))
    try:
        translator = load_translator(folder)
    except TexplainError:
        return
    assert translator.config.hidden == 8 and translator.config.in_dim == 8  # read only when it fits its weights


LM_SIZES = st.one_of(st.integers(-1, 96), st.sampled_from([2, 32, 64, 300]), json_values)
"""LM sizes stay small: a config that fits no weights is refused, but transformers may first build it."""
lm_configs = st.fixed_dictionaries({}, optional={
    **{name: LM_SIZES for name in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions", "eos_token_id")},
    "model_type": st.one_of(st.sampled_from(["gpt2", "llama", "bert", "evil", ""]), json_values),
    "architectures": st.one_of(st.just(["GPT2LMHeadModel"]), json_values),
    "auto_map": st.one_of(st.just({"AutoModelForCausalLM": "evil.Model"}), json_values),
    "texplain_recipe": json_values,
    "activation_function": st.one_of(st.just("gelu_new"), json_values),
})


@settings(FUZZ, deadline=timedelta(seconds=30), max_examples=25)
@given(config=st.one_of(lm_configs, lm_configs, json_values), keep=st.booleans())
@example(config={"n_layer": "two"}, keep=True)
@example(config={"auto_map": {"AutoModelForCausalLM": "evil.Model"}}, keep=True)
def test_lm_configs(tiny_lm_folder, tmp_path, config, keep):
    from texplain.models.lm import load_lm

    folder = tmp_path / "lm"
    shutil.copytree(tiny_lm_folder, folder, dirs_exist_ok=True)
    recipe = json.loads((tiny_lm_folder / "config.json").read_text())
    if keep and isinstance(config, dict):
        recipe.update(config)
    else:
        recipe = config
    (folder / "config.json").write_text(json.dumps(recipe))
    reads_or_refuses(load_lm, str(folder))


PATH_PARTS = st.sampled_from(["..", ".", "", "x", "imgs", "a.png", "masks", "set", "out", "labels.jsonl", "\\", "\x00",
                              "{root}", "a b"])
path_like = st.one_of(
    st.lists(PATH_PARTS, min_size=1, max_size=3).map("/".join),  # at most three .. from out: still in the sandbox
    st.sampled_from(["imgs/a.png", "imgs/b.jpg", None, 7, ""]),
    hostile_text.filter(lambda t: "/" not in t and not t.startswith("~")),
)


@st.composite
def labelled_rows(draw) -> list[dict]:
    return draw(st.lists(st.fixed_dictionaries({"path": path_like, "label": st.one_of(path_like, st.just("bird"))},
                                               optional={"split": path_like, "group": path_like}),
                         min_size=1, max_size=3))


@settings(QUICK, max_examples=50)
@given(rows=labelled_rows())
@example(rows=[{"path": "imgs/a.png", "label": "bird", "split": "../../../set/imgs"}])
@example(rows=[{"path": "imgs/a.png", "label": "bird", "split": "{root}/abs"}])
def test_labelled_rows_with_path_like_fields(tmp_path_factory, capsys, rows):
    from PIL import Image

    root = tmp_path_factory.mktemp("hide")
    (root / "set" / "imgs").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in ("a.png", "b.jpg", "a.jpg"):
        Image.new("RGB", (8, 6), (200, 30, 30)).save(root / "set" / "imgs" / name)
        Image.new("L", (8, 6), 255).save(root / "masks" / Path(name).with_suffix(".png").name)
    filled = [{k: v.replace("{root}", str(root)) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    (root / "set" / "labels.jsonl").write_text("\n".join(json.dumps(row) for row in filled))
    out = root / "deep" / "er" / "out"
    before = files(root)
    one_line_or_done(capsys, ["hide-foreground", root / "set" / "labels.jsonl", "--masks", root / "masks", "--out", out])
    changed = {p for p, stamp in files(root).items() if before.get(p) != stamp}
    assert all(p.is_relative_to(out) for p in changed), sorted(changed)
    assert not any(os.path.lexists(root.parent / name) for name in ("x", "abs", "imgs"))
