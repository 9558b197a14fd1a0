"""The paper's human study, made portable: export words to rate, read the answers back, score them.

:func:`export_rating` writes, for a set of explained images,

- ``ratings.csv``: one row per (image, word) with empty answer columns, for
  raters who prefer a spreadsheet;
- ``form.html``: one self-contained page (images embedded, no network) that
  shows each image, its top-k words with a check box each ("this word is in
  the image") and the classifier's predicted class against the top word
  (yes/no). Its buttons download the answers as CSV (the same columns as
  ``ratings.csv``) or JSON.

:func:`read_answers` reads any of those files back (a filled ``ratings.csv``
too); :func:`score_answers` turns one or more raters' answers into
precision@k of the words, the share of images whose top word matches the
predicted class, and the raters' agreement.

An image counts as rated once its yes/no question is answered; the words of
an image left unanswered are not judged (neither relevant nor not).
"""

from __future__ import annotations

import base64
import csv
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from texplain.atomic import write_text
from texplain.data.files import load_json
from texplain.data.images import load_rgb
from texplain.errors import BadImageError, TexplainError
from texplain.evaluation.config import RATING_WORDS

log = logging.getLogger(__name__)

CSV_COLUMNS = ("rater", "item", "image", "rank", "word", "predicted_class", "relevant", "top_word_matches_class")
"""Columns of ``ratings.csv`` and of the form's CSV export."""

THUMBNAIL = 320
"""Longest side, in pixels, of the images embedded in the form."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP's CSV injection list): such a cell gets a ' first."""

_TRUE = {"1", "yes", "y", "true", "x", "✓"}
_FALSE = {"0", "no", "n", "false"}


@dataclass
class RatingItem:
    """One image to rate: its id, file, top-k words and predicted class."""

    id: str
    image: str
    words: list[str]
    predicted_class: str

    @property
    def top_word(self) -> str:
        return self.words[0]


@dataclass
class RaterAnswers:
    """One rater's answers: per item key (item id, image name), word → relevant, and the class question."""

    rater: str
    source: str
    words: dict[tuple[str, str], dict[str, bool]] = field(default_factory=dict)
    matches_class: dict[tuple[str, str], bool] = field(default_factory=dict)


def read_records(source: str | os.PathLike) -> list[dict]:
    """Explanation records (image, top_words, prediction) from an ``evaluate --json`` file or an ``explain`` folder."""
    source = Path(source)
    if source.is_dir():
        records = [load_json(p) for p in sorted(source.glob("*.json"))]
    elif source.is_file():
        data = load_json(source)
        records = data.get("per_image", [data]) if isinstance(data, dict) else data
    else:
        raise TexplainError(f"{source}: no such file or folder")
    records = [r for r in records if isinstance(r, dict) and {"image", "top_words", "prediction"} <= r.keys()]
    if not records:
        raise TexplainError(f"{source}: no explanation records (JSON with image, top_words and prediction)")
    return records


def rating_items(records: Sequence[dict], k: int = RATING_WORDS) -> tuple[list[RatingItem], list[tuple[str, str]]]:
    """Items to rate from explanation records; records without words are skipped as (image, reason)."""
    if k < 1:
        raise TexplainError(f"rating: k must be at least 1, got {k}")
    items, skipped = [], []
    width = len(str(len(records)))
    for number, record in enumerate(records, start=1):
        words = [w["word"] for w in record["top_words"][:k]]
        if not words:
            skipped.append((record["image"], "empty explanation"))
            continue
        items.append(RatingItem(str(number).zfill(width), str(record["image"]), words, record["prediction"][0]["name"]))
    return items, skipped


def export_rating(records: Sequence[dict], out: str | os.PathLike, k: int = RATING_WORDS) -> tuple[int, list[tuple[str, str]]]:
    """Write ``ratings.csv`` and ``form.html`` into ``out``; returns the items written and the skipped (image, reason)."""
    from texplain.report.templates import render_template

    items, skipped = rating_items(records, k)
    shown = []
    for item in items:
        try:
            shown.append((item, thumbnail(item.image)))
        except BadImageError as exc:
            skipped.append((item.image, str(exc)))
    if not shown:
        raise TexplainError(f"rating: nothing to rate ({len(skipped)} images skipped)")
    out = Path(out)
    write_text(out / "ratings.csv", blank_csv([item for item, _ in shown]))
    payload = [{"id": i.id, "image": Path(i.image).name, "words": i.words, "predicted_class": i.predicted_class,
                "top_word": i.top_word} for i, _ in shown]
    html = render_template("rating.html", items=[(i, uri) for i, uri in shown], payload=payload, k=k, columns=list(CSV_COLUMNS))
    write_text(out / "form.html", html)
    for image, reason in skipped:
        log.warning("rating: skipped %s: %s", image, reason)
    return len(shown), skipped


def thumbnail(path: str | os.PathLike) -> str:
    """The image as a ``data:`` URI (JPEG, longest side :data:`THUMBNAIL`), so the form needs no other file."""
    image = load_rgb(path)
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def blank_csv(items: Sequence[RatingItem]) -> str:
    """``ratings.csv``: one row per (item, word), answer columns empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        for rank, word in enumerate(item.words, start=1):
            writer.writerow(["", item.id, as_text(Path(item.image).name), rank, as_text(word),
                             as_text(item.predicted_class), "", ""])
    return buffer.getvalue()


def as_text(cell: str) -> str:
    """``cell`` as a spreadsheet shows it, as text: one starting like a formula (``=1+2.png``) gets a ' first."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def from_text(cell: str) -> str:
    """The cell :func:`as_text` wrote, as it was."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def read_answers(path: str | os.PathLike) -> RaterAnswers:
    """One rater's answers from the form's JSON or CSV export, or a filled ``ratings.csv``."""
    path = Path(path)
    if not path.is_file():
        raise TexplainError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return _answers_from_json(path, load_json(path))
    return _answers_from_csv(path)


def score_answers(raters: Sequence[RaterAnswers]) -> dict:
    """Precision@k, top-word/class agreement per rater and pooled, and agreement between raters.

    precision: per image, the share of its judged words marked relevant,
    averaged over images. top_word_matches_class: the share of answered images
    whose top word the rater says matches the predicted class. Pooled figures
    average each image over its raters first. agreement: the share of
    (image, word) judgements on which all raters who judged it agree (None
    with one rater).
    """
    if not raters:
        raise TexplainError("rating: no answer files given")
    per_rater = [{"rater": r.rater, "source": r.source, **_figures([r])} for r in raters]
    shared = [values for values in _judgements(raters).values() if len(values) > 1]
    agreement = sum(len(set(values)) == 1 for values in shared) / len(shared) if shared else None
    if all(row["images"] == 0 for row in per_rater):
        raise TexplainError(f"rating: no image is answered in {', '.join(r.source for r in raters)}")
    return {"raters": len(raters), "per_rater": per_rater, "pooled": _figures(raters),
            "agreement": None if agreement is None else round(agreement, 4), "judgements_shared": len(shared)}


def _figures(raters: Sequence[RaterAnswers]) -> dict:
    """Images answered, mean precision and class agreement, each image averaged over its raters first."""
    precision: dict[tuple[str, str], list[float]] = {}
    matches: dict[tuple[str, str], list[float]] = {}
    for rater in raters:
        for key, words in rater.words.items():
            if words:
                precision.setdefault(key, []).append(sum(words.values()) / len(words))
        for key, value in rater.matches_class.items():
            matches.setdefault(key, []).append(float(value))
    return {"images": len(precision.keys() | matches.keys()), "precision": _mean_of_means(precision),
            "top_word_matches_class": _mean_of_means(matches)}


def _mean_of_means(groups: dict[tuple[str, str], list[float]]) -> float | None:
    """Mean over images of each image's mean over raters; None when no image has a value."""
    if not groups:
        return None
    return round(sum(sum(v) / len(v) for v in groups.values()) / len(groups), 4)


def _judgements(raters: Sequence[RaterAnswers]) -> dict[tuple[str, str, str], list[bool]]:
    out: dict[tuple[str, str, str], list[bool]] = {}
    for rater in raters:
        for key, words in rater.words.items():
            for word, value in words.items():
                out.setdefault((*key, word), []).append(value)
    return out


def _answers_from_csv(path: Path) -> RaterAnswers:
    """Rows of (item, image, word, relevant, top_word_matches_class); blank answers are not judged."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TexplainError(f"{path}: cannot read the answers ({exc})") from exc
    needed = {"item", "image", "word", "relevant"}
    if not rows or not needed <= rows[0].keys():
        raise TexplainError(f"{path}: not a rating CSV (needs columns {', '.join(sorted(needed))})")
    answers = RaterAnswers(rater=_rater_name(from_text(rows[0].get("rater") or ""), path), source=str(path))
    for line, row in enumerate(rows, start=2):
        key = (row["item"].strip(), from_text(row["image"].strip()))
        relevant = _truth(row["relevant"], f"{path}:{line}")
        matches = _truth(row.get("top_word_matches_class") or "", f"{path}:{line}")
        if relevant is not None:
            answers.words.setdefault(key, {})[from_text(row["word"].strip())] = relevant
        if matches is not None:
            answers.matches_class[key] = matches
    return answers


def _answers_from_json(path: Path, data: object) -> RaterAnswers:
    """The form's JSON export: {rater, items: [{item, image, words: [{word, relevant}], top_word_matches_class}]}."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise TexplainError(f"{path}: not a rating JSON export (needs an 'items' list)")
    answers = RaterAnswers(rater=_rater_name(data.get("rater"), path), source=str(path))
    for number, item in enumerate(data["items"]):
        where = f"{path}: items[{number}]"
        try:
            key = (str(item["item"]), str(item["image"]))
            words = item["words"]
        except (KeyError, TypeError) as exc:
            raise TexplainError(f"{where}: missing {exc}") from exc
        for word in words:
            relevant = word.get("relevant") if isinstance(word, dict) else None
            if relevant is not None:
                answers.words.setdefault(key, {})[str(word["word"])] = _truth(str(relevant), where)
        if item.get("top_word_matches_class") is not None:
            answers.matches_class[key] = _truth(str(item["top_word_matches_class"]), where)
    return answers


def _truth(text: str, where: str) -> bool | None:
    """'1'/'yes'/'true'/'x' → True, '0'/'no'/'false' → False, blank → None; anything else is an error."""
    value = text.strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise TexplainError(f"{where}: answer {text!r} is not yes/no (use 1 or 0)")


def _rater_name(name: object, path: Path) -> str:
    return str(name).strip() if name and str(name).strip() else path.stem

