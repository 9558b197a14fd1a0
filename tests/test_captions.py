"""Each caption layout parses a hand-written file to the expected pairs; bad rows name file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from texplain.data.captions import (
    CaptionPair,
    missing_images,
    read_captions,
    read_coco_captions,
    read_flickr_token,
)
from texplain.errors import TexplainError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_shared_flickr_tsv_resolves_images_folder_and_keeps_quotes(tmp_path):
    images = tmp_path / "images"
    _touch(images / "1.jpg")
    path = _write(
        tmp_path / "captions.tsv",
        'image\tsplit\tcaption\n1.jpg\ttrain\tA dog .\n1.jpg\ttrain\tA " quoted " sign .\n2.jpg\tdev\tTwo cats .\n',
    )
    assert read_captions(path) == [
        CaptionPair(images / "1.jpg", "A dog .", "train"),
        CaptionPair(images / "1.jpg", 'A " quoted " sign .', "train"),
        CaptionPair(images / "2.jpg", "Two cats .", "dev"),
    ]
    assert read_captions(path, split="dev") == [CaptionPair(images / "2.jpg", "Two cats .", "dev")]
    assert missing_images(read_captions(path)) == [images / "2.jpg"]


def test_tsv_given_images_dir_wins(tmp_path):
    path = _write(tmp_path / "c.tsv", "image\tcaption\na.jpg\tA cat .\n")
    assert read_captions(path, images_dir=tmp_path / "elsewhere") == [
        CaptionPair(tmp_path / "elsewhere/a.jpg", "A cat .", None)
    ]


def test_tsv_wrong_column_count_names_line(tmp_path):
    path = _write(tmp_path / "c.tsv", "image\tsplit\tcaption\na.jpg\ttrain\tok\nb.jpg\tnothing else\n")
    with pytest.raises(TexplainError, match=r"c\.tsv:3: expected 3 columns, got 2"):
        read_captions(path)


def test_tsv_empty_caption_names_line(tmp_path):
    path = _write(tmp_path / "c.tsv", "image\tsplit\tcaption\na.jpg\ttrain\t  \n")
    with pytest.raises(TexplainError, match=r"c\.tsv:2: empty caption"):
        read_captions(path)


def test_flickr_token_with_split_lists_and_dataset_folder(tmp_path):
    text_dir = tmp_path / "Flickr8k_text"
    dataset = tmp_path / "Flicker8k_Dataset"
    _touch(dataset / "100_a.jpg")
    path = _write(
        text_dir / "Flickr8k.token.txt",
        "100_a.jpg#0\tA child climbs stairs .\n100_a.jpg#1\tA girl .\n200_b.jpg#0\tA dog runs .\n"
        "300_c.jpg#0\tNo split .\n",
    )
    _write(text_dir / "Flickr_8k.trainImages.txt", "100_a.jpg\n")
    _write(text_dir / "Flickr_8k.testImages.txt", "200_b.jpg\n")
    assert read_captions(path) == [
        CaptionPair(dataset / "100_a.jpg", "A child climbs stairs .", "train"),
        CaptionPair(dataset / "100_a.jpg", "A girl .", "train"),
        CaptionPair(dataset / "200_b.jpg", "A dog runs .", "test"),
        CaptionPair(dataset / "300_c.jpg", "No split .", None),
    ]
    assert [pair.caption for pair in read_captions(path, split="test")] == ["A dog runs ."]


def test_flickr_token_without_split_lists(tmp_path):
    path = _write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA cat .\n")
    assert read_flickr_token(path, images_dir="/imgs") == [CaptionPair(Path("/imgs/a.jpg"), "A cat .")]
    with pytest.raises(TexplainError, match=r"Flickr8k\.token\.txt: has no split information"):
        read_captions(path, split="train")


def test_flickr_token_bad_line_names_line(tmp_path):
    path = _write(tmp_path / "Flickr8k.token.txt", "a.jpg#0\tA cat .\na.jpg A dog without a tab\n")
    with pytest.raises(TexplainError, match=r"Flickr8k\.token\.txt:2: expected '<image>#<n><TAB><caption>'"):
        read_captions(path)


def _coco(images: list, annotations: list) -> str:
    return json.dumps({"info": {}, "images": images, "annotations": annotations})


def test_coco_split_from_name_and_images_beside_annotations(tmp_path):
    _touch(tmp_path / "val2017/000000000139.jpg")
    path = _write(
        tmp_path / "annotations/captions_val2017.json",
        _coco(
            [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 285, "file_name": "000000000285.jpg"}],
            [
                {"id": 1, "image_id": 139, "caption": "A living room. "},
                {"id": 2, "image_id": 285, "caption": "A bear."},
                {"id": 3, "image_id": 139, "caption": "A couch."},
            ],
        ),
    )
    folder = tmp_path / "val2017"
    assert read_captions(path) == [
        CaptionPair(folder / "000000000139.jpg", "A living room.", "val"),
        CaptionPair(folder / "000000000285.jpg", "A bear.", "val"),
        CaptionPair(folder / "000000000139.jpg", "A couch.", "val"),
    ]
    assert {pair.split for pair in read_coco_captions(path, split="restval")} == {"restval"}


def test_coco_unknown_image_id_names_annotation(tmp_path):
    path = _write(
        tmp_path / "caps.json",
        _coco([{"id": 1, "file_name": "a.jpg"}], [{"image_id": 1, "caption": "ok"}, {"image_id": 7, "caption": "x"}]),
    )
    with pytest.raises(TexplainError, match=r"caps\.json: annotations\[1\]: unknown image_id 7"):
        read_captions(path)


def test_coco_missing_caption_names_annotation(tmp_path):
    path = _write(tmp_path / "caps.json", _coco([{"id": 1, "file_name": "a.jpg"}], [{"image_id": 1}]))
    with pytest.raises(TexplainError, match=r"annotations\[0\]: missing 'caption'"):
        read_captions(path)


def test_karpathy_split_json(tmp_path):
    path = _write(
        tmp_path / "dataset_flickr8k.json",
        json.dumps(
            {
                "dataset": "flickr8k",
                "images": [
                    {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "A cat ."}, {"raw": "A pet ."}]},
                    {"filename": "b.jpg", "split": "val", "sentences": [{"raw": "A dog ."}]},
                ],
            }
        ),
    )
    assert read_captions(path, images_dir=tmp_path) == [
        CaptionPair(tmp_path / "a.jpg", "A cat .", "train"),
        CaptionPair(tmp_path / "a.jpg", "A pet .", "train"),
        CaptionPair(tmp_path / "b.jpg", "A dog .", "val"),
    ]


def test_bad_json_names_line(tmp_path):
    path = _write(tmp_path / "caps.json", '{"images": [],\n "annotations": [,]}\n')
    with pytest.raises(TexplainError, match=r"caps\.json:2: bad JSON"):
        read_captions(path)


def test_jsonl_pairs_relative_to_file(tmp_path):
    path = _write(
        tmp_path / "caps.jsonl",
        '{"image": "x/a.jpg", "caption": "A cat .", "split": "train"}\n\n{"image": "/abs/b.jpg", "caption": "A dog ."}\n',
    )
    assert read_captions(path) == [
        CaptionPair(tmp_path / "x/a.jpg", "A cat .", "train"),
        CaptionPair(Path("/abs/b.jpg"), "A dog .", None),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"image": "a.jpg", "caption": ', r"bad JSON"),
        ('{"image": "a.jpg"}', r"missing 'caption'"),
        ('{"caption": "A cat ."}', r"missing 'image'"),
        ('{"image": "a.jpg", "caption": ""}', r"'caption' must be a non-empty string"),
        ('["a.jpg", "A cat ."]', r"expected a JSON object"),
    ],
)
def test_jsonl_bad_line_names_line(tmp_path, line, problem):
    path = _write(tmp_path / "caps.jsonl", '{"image": "ok.jpg", "caption": "fine"}\n' + line + "\n")
    with pytest.raises(TexplainError, match=rf"caps\.jsonl:2: {problem}"):
        read_captions(path)


def test_csv_with_quotes_and_optional_split(tmp_path):
    path = _write(
        tmp_path / "caps.csv",
        'image,caption,split\na.jpg,"A cat, sleeping .",train\nb.jpg,"He said ""hi"" .",\n',
    )
    assert read_captions(path) == [
        CaptionPair(tmp_path / "a.jpg", "A cat, sleeping .", "train"),
        CaptionPair(tmp_path / "b.jpg", 'He said "hi" .', None),
    ]


def test_csv_missing_column_and_bad_row(tmp_path):
    no_caption = _write(tmp_path / "a.csv", "image,text_len\na.jpg,3\n")
    with pytest.raises(TexplainError, match=r"a\.csv:1: header has no caption"):
        read_captions(no_caption)
    short_row = _write(tmp_path / "b.csv", "image,caption\na.jpg,A cat .\nb.jpg\n")
    with pytest.raises(TexplainError, match=r"b\.csv:3: expected 2 columns, got 1"):
        read_captions(short_row)


def test_empty_result_and_unknown_split_name_the_file(tmp_path):
    header_only = _write(tmp_path / "h.tsv", "image\tsplit\tcaption\n")
    with pytest.raises(TexplainError, match=r"h\.tsv: no captions"):
        read_captions(header_only)
    path = _write(tmp_path / "c.tsv", "image\tsplit\tcaption\na.jpg\ttrain\tA cat .\n")
    with pytest.raises(TexplainError, match=r"c\.tsv: no captions in split 'test' \(splits: train\)"):
        read_captions(path, split="test")


def test_unknown_format_lists_supported(tmp_path):
    path = _write(tmp_path / "caps.xml", "<captions/>")
    with pytest.raises(TexplainError, match=r"caps\.xml: unknown caption format; supported: .*COCO.*jsonl.*csv"):
        read_captions(path)
    text = _write(tmp_path / "notes.txt", "just some words\n")
    with pytest.raises(TexplainError, match=r"notes\.txt: unknown caption format"):
        read_captions(text)


def test_missing_file_and_folder_lookup(tmp_path):
    with pytest.raises(TexplainError, match=r"gone\.tsv: no such file"):
        read_captions(tmp_path / "gone.tsv")
    _write(tmp_path / "captions.tsv", "image\tsplit\tcaption\na.jpg\ttrain\tA cat .\n")
    assert len(read_captions(tmp_path)) == 1


def test_missing_images_checks_each_image_once(tmp_path):
    present = _touch(tmp_path / "here.jpg")
    pairs = [
        CaptionPair(present, "one"),
        CaptionPair(tmp_path / "gone.jpg", "two"),
        CaptionPair(tmp_path / "gone.jpg", "three"),
    ]
    assert missing_images(pairs) == [tmp_path / "gone.jpg"]
