"""Labelled-set readers: class folders, split folders, BAR metadata, CSV and JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from texplain.data.labelled import LabelledImage, class_names, read_labelled
from texplain.errors import TexplainError


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_class_folders(tmp_path):
    _touch(tmp_path / "dog/b.jpg", tmp_path / "dog/a.PNG", tmp_path / "cat/deep/c.jpg", tmp_path / "cat/notes.txt")
    assert read_labelled(tmp_path) == [
        LabelledImage(tmp_path / "cat/deep/c.jpg", "cat"),
        LabelledImage(tmp_path / "dog/a.PNG", "dog"),
        LabelledImage(tmp_path / "dog/b.jpg", "dog"),
    ]


def test_split_folders_above_class_folders(tmp_path):
    _touch(tmp_path / "train/cat/a.jpg", tmp_path / "train/dog/b.jpg", tmp_path / "Val/cat/c.jpg")
    items = read_labelled(tmp_path)
    assert [(item.path.name, item.label, item.split) for item in items] == [
        ("c.jpg", "cat", "Val"),
        ("a.jpg", "cat", "train"),
        ("b.jpg", "dog", "train"),
    ]
    assert [item.path.name for item in read_labelled(tmp_path, split="train")] == ["a.jpg", "b.jpg"]
    assert class_names(items) == ["cat", "dog"]


def test_a_class_named_train_beside_others_is_a_class(tmp_path):
    _touch(tmp_path / "train/a.jpg", tmp_path / "bus/b.jpg")
    assert class_names(read_labelled(tmp_path)) == ["bus", "train"]


def test_empty_class_raises_naming_it(tmp_path):
    _touch(tmp_path / "cat/a.jpg", tmp_path / "dog/readme.txt")
    with pytest.raises(TexplainError, match=r"dog: empty class"):
        read_labelled(tmp_path)


def test_images_outside_class_folders_raise(tmp_path):
    _touch(tmp_path / "train/a.jpg", tmp_path / "test/b.jpg")
    with pytest.raises(TexplainError, match=r"test: no class sub-folders"):
        read_labelled(tmp_path)
    _touch(tmp_path / "other/cat/c.jpg", tmp_path / "other/loose.jpg")
    with pytest.raises(TexplainError, match=r"other: 1 image\(s\) outside class folders, e\.g\. loose\.jpg"):
        read_labelled(tmp_path / "other")


def test_no_images_at_all_raises(tmp_path):
    with pytest.raises(TexplainError, match=r"no class sub-folders"):
        read_labelled(tmp_path)


def _bar(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries))
    return path


def test_bar_metadata_file_and_folder(tmp_path):
    _touch(tmp_path / "train/climbing_0.jpg", tmp_path / "test/diving_3.jpg")
    _bar(
        tmp_path,
        {
            "climbing_0": {"file": "train/climbing_0.jpg", "cls": "climbing", "split": "train", "source": "google"},
            "diving_3": {"file": "test/diving_3.jpg", "cls": "diving", "split": "test", "source": "imSitu"},
        },
    )
    expected = [
        LabelledImage(tmp_path / "train/climbing_0.jpg", "climbing", "train"),
        LabelledImage(tmp_path / "test/diving_3.jpg", "diving", "test"),
    ]
    assert read_labelled(tmp_path / "metadata.json") == expected
    assert read_labelled(tmp_path) == expected
    assert read_labelled(tmp_path, split="test") == expected[1:]


def test_bar_entry_without_class_names_the_entry(tmp_path):
    _touch(tmp_path / "train/x.jpg")
    _bar(tmp_path, {"x": {"file": "train/x.jpg", "split": "train"}})
    with pytest.raises(TexplainError, match=r"metadata\.json: entry 'x': missing label"):
        read_labelled(tmp_path)


def test_bar_entry_pointing_at_missing_file(tmp_path):
    _bar(tmp_path, {"x": {"file": "train/x.jpg", "cls": "fishing"}})
    with pytest.raises(TexplainError, match=r"entry 'x': train/x\.jpg: no such file"):
        read_labelled(tmp_path / "metadata.json")


def test_csv_with_split_and_group(tmp_path):
    _touch(tmp_path / "imgs/a.jpg", tmp_path / "imgs/b.jpg")
    listing = tmp_path / "set.csv"
    listing.write_text("path,label,split,group\nimgs/a.jpg,landbird,train,land/land\nimgs/b.jpg,waterbird,,\n")
    assert read_labelled(listing) == [
        LabelledImage(tmp_path / "imgs/a.jpg", "landbird", "train", "land/land"),
        LabelledImage(tmp_path / "imgs/b.jpg", "waterbird", None, None),
    ]


def test_csv_row_with_missing_label_names_line(tmp_path):
    _touch(tmp_path / "a.jpg", tmp_path / "b.jpg")
    listing = tmp_path / "set.csv"
    listing.write_text("path,label\na.jpg,cat\nb.jpg,\n")
    with pytest.raises(TexplainError, match=r"set\.csv:3: missing label"):
        read_labelled(listing)


def test_csv_without_label_column_and_missing_image(tmp_path):
    no_label = tmp_path / "a.csv"
    no_label.write_text("path,split\nx.jpg,train\n")
    with pytest.raises(TexplainError, match=r"a\.csv:1: header has no label"):
        read_labelled(no_label)
    missing = tmp_path / "b.csv"
    missing.write_text("path,label\nnope.jpg,cat\n")
    with pytest.raises(TexplainError, match=r"b\.csv:2: nope\.jpg: no such file"):
        read_labelled(missing)


def test_jsonl(tmp_path):
    _touch(tmp_path / "a.jpg", tmp_path / "b.jpg")
    listing = tmp_path / "set.jsonl"
    listing.write_text('{"path": "a.jpg", "label": "cat", "split": "test", "group": "g1"}\n{"path": "b.jpg", "label": "dog"}\n')
    assert read_labelled(listing) == [
        LabelledImage(tmp_path / "a.jpg", "cat", "test", "g1"),
        LabelledImage(tmp_path / "b.jpg", "dog"),
    ]


def test_jsonl_bad_line_names_line(tmp_path):
    _touch(tmp_path / "a.jpg")
    listing = tmp_path / "set.jsonl"
    listing.write_text('{"path": "a.jpg", "label": "cat"}\n{"path": "a.jpg"}\n')
    with pytest.raises(TexplainError, match=r"set\.jsonl:2: missing label"):
        read_labelled(listing)


def test_missing_source_unknown_format_and_empty_listing(tmp_path):
    with pytest.raises(TexplainError, match=r"nothing: no such file or folder"):
        read_labelled(tmp_path / "nothing")
    odd = tmp_path / "set.xml"
    odd.write_text("<x/>")
    with pytest.raises(TexplainError, match=r"set\.xml: unknown labelled-set format"):
        read_labelled(odd)
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(TexplainError, match=r"empty\.csv: no labelled images"):
        read_labelled(empty)


def test_split_filter_without_split_information(tmp_path):
    _touch(tmp_path / "cat/a.jpg")
    with pytest.raises(TexplainError, match=r"has no split information, cannot select split 'train'"):
        read_labelled(tmp_path, split="train")
