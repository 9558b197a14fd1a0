"""Property-based fuzzing of the readers of user files: they read, or raise TexplainError, never anything else.

Caption files (TSV, JSONL, CSV, COCO/Karpathy JSON, Flickr token text),
labelled-set listings (CSV, TSV, JSONL, BAR JSON), class-word overrides (JSON,
YAML) and image bytes are generated from their own vocabulary (the column
names and keys the readers look for) mixed with hostile text and raw bytes.
Examples are derandomised, so every run tries the same few hundred files.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

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
