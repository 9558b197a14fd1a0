"""The demo's report folder: class word clouds, findings, accuracy per group, one HTML page.

Everything that goes into the page is escaped by jinja2's autoescape; images
are files beside ``index.html`` so the folder can be opened offline.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from texplain.atomic import write_text
from texplain.report.wordcloud import draw_word_cloud


def render_template(name: str, **context: object) -> str:
    """Render one of the package's HTML templates with autoescaping on."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("texplain", "report/templates"), autoescape=select_autoescape(["html"]))
    return env.get_template(name).render(**context)


def write_demo_report(
    folder: Path, summary: dict, explanations: dict, findings: list[str], examples_per_class: int = 4
) -> Path:
    """Draw the class word clouds and write ``index.html`` with ``findings`` on top; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    clouds, only_bg_clouds = {}, {}
    for name, result in summary["classes"].items():
        clouds[name] = _cloud(folder / f"cloud_{name}.png", result["top_words"], name)
        only_bg_clouds[name] = _cloud(folder / f"cloud_only_bg_{name}.png", result["only_background"]["top_words"], name)
    examples: dict[str, list[dict]] = defaultdict(list)
    for row in explanations["split"]:
        if len(examples[row["predicted"]]) < examples_per_class and row["sentences"]:
            examples[row["predicted"]].append(row)
    html = render_template(
        "demo.html",
        settings=summary["settings"],
        headline=findings,
        classes=summary["classes"],
        accuracy=summary["accuracy"],
        clouds=clouds,
        only_bg_clouds=only_bg_clouds,
        examples=dict(examples),
    )
    return write_text(folder / "index.html", html)


def _cloud(path: Path, top_words: list[dict], class_name: str) -> str | None:
    """Draw one word cloud; returns its file name relative to the report, or None when empty."""
    frequencies = {w["word"]: w["frequency"] for w in top_words if w["frequency"] > 0}
    if not frequencies:
        return None
    draw_word_cloud(frequencies, path, highlight=[class_name])
    return path.name
