"""Rating export (CSV + self-contained form), reading answers back, and scoring them by hand."""

from __future__ import annotations

import csv
import io
import json

import pytest

from texplain.cli import main
from texplain.errors import TexplainError
from texplain.evaluation.rating import (
    CSV_COLUMNS,
    export_rating,
    read_answers,
    read_records,
    score_answers,
)


def record(image, words, predicted="dog"):
    return {"image": str(image), "top_words": [{"word": w, "frequency": 0.5} for w in words],
            "prediction": [{"index": 0, "name": predicted, "prob": 0.9}]}


@pytest.fixture
def records(images):
    return [
        record(images[0], ["dog", "grass", "<b>bold</b>", "ball"]),
        record(images[1], ["water", "boat"], predicted='cat "quoted" & co'),
        record(images[2], []),
    ]


def test_export_writes_a_csv_and_a_self_contained_escaped_form(records, tmp_path):
    written, skipped = export_rating(records, tmp_path / "rate", k=3)
    assert written == 2 and skipped == [(str(records[2]["image"]), "empty explanation")]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rate" / "ratings.csv").read_text())))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [(r["item"], r["rank"], r["word"]) for r in rows] == [
        ("1", "1", "dog"), ("1", "2", "grass"), ("1", "3", "<b>bold</b>"), ("2", "1", "water"), ("2", "2", "boat")]
    assert all(r["relevant"] == "" for r in rows)
    html = (tmp_path / "rate" / "form.html").read_text()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "cat &#34;quoted&#34; &amp; co" in html
    assert html.count('type="checkbox"') == 5 and html.count('type="radio"') == 4
    assert html.count("data:image/jpeg;base64,") == 2
    assert "http://" not in html and "https://" not in html and "<link" not in html


def test_read_records_from_an_evaluate_report_and_an_explain_folder(records, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"rouge_l": {}, "per_image": records}))
    assert read_records(report) == records
    folder = tmp_path / "explained"
    folder.mkdir()
    for i, r in enumerate(records):
        (folder / f"{i}.json").write_text(json.dumps(r))
    assert [r["image"] for r in read_records(folder)] == [r["image"] for r in records]
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(TexplainError, match="no explanation records"):
        read_records(tmp_path / "empty.json")


FILLED = """rater,item,image,rank,word,predicted_class,relevant,top_word_matches_class
ann,1,a.png,1,dog,dog,1,1
ann,1,a.png,2,grass,dog,1,
ann,1,a.png,3,ball,dog,0,
ann,2,b.png,1,water,cat,yes,no
ann,2,b.png,2,boat,cat,no,
ann,3,c.png,1,sky,car,,
ann,3,c.png,2,road,car,,
"""


def test_score_a_filled_csv_by_hand(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text(FILLED)
    answers = read_answers(path)
    assert answers.rater == "ann"
    scores = score_answers([answers])
    # image 1: 2 of 3 words; image 2: 1 of 2; image 3 unanswered → (2/3 + 1/2) / 2; class: yes, no
    assert scores["pooled"] == {"images": 2, "precision": pytest.approx(0.5833, abs=1e-4), "top_word_matches_class": 0.5}
    assert scores["agreement"] is None and scores["raters"] == 1


def test_json_export_and_two_raters(tmp_path):
    first = tmp_path / "ann.csv"
    first.write_text(FILLED)
    bob = {"format": "texplain-rating-1", "rater": "bob", "items": [
        {"item": "1", "image": "a.png", "predicted_class": "dog", "top_word": "dog", "top_word_matches_class": True,
         "words": [{"rank": 1, "word": "dog", "relevant": True}, {"rank": 2, "word": "grass", "relevant": False},
                   {"rank": 3, "word": "ball", "relevant": False}]},
        {"item": "2", "image": "b.png", "predicted_class": "cat", "top_word": "water", "top_word_matches_class": None,
         "words": [{"rank": 1, "word": "water", "relevant": None}, {"rank": 2, "word": "boat", "relevant": None}]},
    ]}
    second = tmp_path / "bob.json"
    second.write_text(json.dumps(bob))
    scores = score_answers([read_answers(first), read_answers(second)])
    assert [r["rater"] for r in scores["per_rater"]] == ["ann", "bob"]
    assert scores["per_rater"][1]["precision"] == pytest.approx(1 / 3, abs=1e-4)
    # image 1: (2/3 + 1/3) / 2 = 0.5; image 2: ann only, 0.5 → pooled 0.5; class: image 1 (1 + 1) / 2, image 2 0
    assert scores["pooled"]["precision"] == pytest.approx(0.5) and scores["pooled"]["top_word_matches_class"] == 0.5
    # shared judgements: dog (agree), grass (disagree), ball (agree)
    assert scores["agreement"] == pytest.approx(2 / 3, abs=1e-4) and scores["judgements_shared"] == 3


def test_bad_answer_files(tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(TexplainError, match="not a rating CSV"):
        read_answers(wrong)
    maybe = tmp_path / "maybe.csv"
    maybe.write_text(FILLED.replace("ann,1,a.png,2,grass,dog,1,", "ann,1,a.png,2,grass,dog,maybe,"))
    with pytest.raises(TexplainError, match=r"maybe.csv:3: answer 'maybe' is not yes/no"):
        read_answers(maybe)
    blank = tmp_path / "blank.csv"
    blank.write_text(FILLED.split("\n")[0] + "\n" + "ann,3,c.png,1,sky,car,,\n")
    with pytest.raises(TexplainError, match="no image is answered"):
        score_answers([read_answers(blank)])


def test_rating_cli_round_trip(records, tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"per_image": records}))
    assert main(["rating-export", str(report), "--out", str(tmp_path / "rate"), "--top-words", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rate" / "ratings.csv").read_text())))
    for row in rows:
        row.update(rater="cli", relevant="1" if row["word"] in ("dog", "boat") else "0",
                   top_word_matches_class="1" if row["rank"] == "1" else "")
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert main(["rating-score", str(filled), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["pooled"]["precision"] == pytest.approx(0.5) and scores["pooled"]["top_word_matches_class"] == 1.0
    assert "precision@k 0.500" in capsys.readouterr().out
    assert main(["rating-score", str(tmp_path / "missing.csv")]) == 2
