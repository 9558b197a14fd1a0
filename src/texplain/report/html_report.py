"""The browsable report of a data set's explanations: one offline folder, ``index.html`` plus assets.

What it shows (section ids in brackets, so links and tests can reach them):

* an overview of every class: images, how often the class is said, its top
  suspects, and notes (a missing split, no prior) [``overview``];
* per class [``class-<i>``]: word clouds per split side by side, the class's
  merged word in red; top words with Wilson intervals and lifts over the LM
  prior; the words that shift between the compared splits; the suspects with
  the images where each is strongest; the only-background result with top-5
  plots of original vs hidden;
* per example image [``img-<i>``]: the image, its label and group, the top-5
  prediction, its top words and sample sentences (and its hidden twin);
* accuracy per group [``accuracy``] and the LM prior's own words [``prior``].

Sections are shown one at a time through CSS ``:target``: no script, and
every link works offline. Images are copied in as thumbnails, so the folder
can be moved or zipped. Every text goes through jinja2's autoescape.

The report is built in a temporary folder beside the target and swapped in
only once complete; an older report is kept until then, and a folder that is
not a texplain report is never replaced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from texplain.analysis.analyse import ALL_SPLITS, DatasetAnalysis
from texplain.analysis.only_background import (
    ROW_COLUMNS,
    OnlyBackgroundClass,
    plot_top5,
)
from texplain.analysis.results import ResultsFolder
from texplain.atomic import building_folder, check_writable, write_json, write_text, writing
from texplain.data.images import load_rgb
from texplain.errors import BadImageError, TexplainError
from texplain.report.config import ReportConfig
from texplain.report.templates import render_template
from texplain.report.wordcloud import draw_word_cloud

log = logging.getLogger(__name__)

MARKER = ".texplain-report"
"""A file every report folder holds: a folder without it is never replaced."""


def write_report(
    folder: str | os.PathLike,
    results: ResultsFolder,
    analysis: DatasetAnalysis,
    only_background: Mapping[str, OnlyBackgroundClass] | None = None,
    config: ReportConfig | None = None,
) -> Path:
    """Build the report in a temporary folder, then swap it in for ``folder``; returns ``folder/index.html``."""
    config = config or ReportConfig()
    folder = check_report_folder(folder)
    with building_folder(folder) as tmp:
        _build(tmp, results, analysis, only_background or {}, config)
    return folder / "index.html"


def check_report_folder(folder: str | os.PathLike) -> Path:
    """Refuse a folder the report may not replace: one that is not a report, or whose parent cannot be written.

    The report is built beside ``folder`` and swapped in, so the parent is
    what must be writable; a command checks this before its analysis.
    """
    folder = Path(folder)
    if folder.exists() and not (folder / MARKER).is_file():
        raise TexplainError(f"{folder}: exists and is not a texplain report; not replaced (choose another --out)")
    check_writable(folder.parent)
    return folder


def _build(
    out: Path, results: ResultsFolder, analysis: DatasetAnalysis,
    only_background: Mapping[str, OnlyBackgroundClass], config: ReportConfig,
) -> None:
    """Draw the clouds, copy the images, plot the only-background pairs, render ``index.html``."""
    (out / "assets").mkdir()
    names = list(analysis.classes)
    class_ids = {name: f"class-{i}" for i, name in enumerate(names)}
    splits = [*analysis.splits] or [ALL_SPLITS]
    clouds = _clouds(out, analysis, splits, class_ids, config)
    wanted = _drilldown_images(results, analysis, only_background, config)
    chosen = set(wanted)
    rows = {r["image"]: r for r in results.iter_rows(ROW_COLUMNS) if r["image"] in chosen}
    images = {path: _image_entry(out, i, rows[path], config) for i, path in enumerate(wanted) if path in rows}
    hidden = _only_background_assets(out, only_background, images, config)
    per_class_images = {
        name: [images[p] for p in wanted if p in images and rows[p][analysis.config.by] == name] for name in names
    }
    html = render_template(
        "report.html",
        title=config.title,
        findings=config.findings,
        analysis=analysis,
        splits=splits,
        class_ids=class_ids,
        clouds=clouds,
        images=images,
        per_class_images=per_class_images,
        only_background=only_background,
        hidden=hidden,
        settings=results.settings,
        results_folder=str(results.folder),
    )
    write_text(out / "index.html", html)
    write_json(out / "analysis.json", analysis.to_json() | {
        "only_background": {name: c.to_json() for name, c in only_background.items()}})
    write_text(out / MARKER, "texplain report\n")


def _clouds(
    out: Path, analysis: DatasetAnalysis, splits: list[str], class_ids: Mapping[str, str], config: ReportConfig
) -> dict:
    """Per class and shown split, the word cloud's file name (None when the pool has no words).

    The class's merged word is always drawn (in red), even when it is too
    rare to be among the top words: a small red word is the finding.
    """
    clouds: dict[str, dict[str, str | None]] = {}
    for name, report in analysis.classes.items():
        clouds[name] = {}
        for split, words in report.words.items():
            if split not in splits:
                continue
            frequencies = {w.word: w.frequency for w in [*words, report.class_word[split]] if w.frequency > 0}
            relative = f"assets/cloud_{class_ids[name]}_{_safe(split)}.png"
            clouds[name][split] = relative if frequencies else None
            if frequencies:
                draw_word_cloud(frequencies, out / relative, highlight=[name], width=480, height=260, seed=config.seed)
    return clouds


def _drilldown_images(
    results: ResultsFolder, analysis: DatasetAnalysis, only_background: Mapping[str, OnlyBackgroundClass],
    config: ReportConfig,
) -> list[str]:
    """The images that get a drill-down: suspect examples, only-background examples, the first few per class and split."""
    wanted: dict[str, None] = {}
    for report in analysis.classes.values():
        for suspect in report.suspects:
            wanted.update(dict.fromkeys(suspect.examples))
    for result in only_background.values():
        wanted.update(dict.fromkeys(original["image"] for original, _ in result.examples))
    taken: dict[tuple, int] = {}
    for row in results.iter_rows(["image", "label", "predicted", "split"]):
        key = (row[analysis.config.by], row["split"])
        if taken.get(key, 0) < config.images_per_class:
            taken[key] = taken.get(key, 0) + 1
            wanted[row["image"]] = None
    return list(wanted)


def _image_entry(out: Path, number: int, row: dict, config: ReportConfig) -> dict:
    """A drill-down entry: the row, its anchor id and its thumbnail (None when the image is gone)."""
    return {"id": f"img-{number}", "row": row, "thumb": _thumbnail(row["image"], out / f"assets/img-{number}.png", config)}


def _thumbnail(source: str, target: Path, config: ReportConfig) -> str | None:
    """Copy an image in as a PNG thumbnail; its path relative to the report, or None if unreadable."""
    try:
        image = load_rgb(source)
    except BadImageError as exc:
        log.warning("report: no thumbnail for %s (%s)", source, exc)
        return None
    image.thumbnail((config.thumbnail, config.thumbnail), Image.Resampling.LANCZOS)
    with writing(target) as tmp:
        image.save(tmp, format="PNG")
    return f"assets/{target.name}"


def _only_background_assets(
    out: Path, only_background: Mapping[str, OnlyBackgroundClass], images: Mapping[str, dict], config: ReportConfig
) -> dict[str, dict]:
    """Per original image with a hidden twin: the twin's row, thumbnail and the top-5 plot."""
    hidden = {}
    for result in only_background.values():
        for original, twin in result.examples:
            entry = images.get(original["image"])
            if entry is None:
                continue
            number = entry["id"].removeprefix("img-")
            plot = plot_top5(original, twin, out / f"assets/top5-{number}.png", title=f"label: {original['label']}")
            hidden[original["image"]] = {
                "row": twin,
                "thumb": _thumbnail(twin["image"], out / f"assets/hidden-{number}.png", config),
                "plot": f"assets/{plot.name}",
            }
    return hidden


def _safe(text: str) -> str:
    """A file-name-safe form of a split name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)

