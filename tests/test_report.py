"""The HTML report: content, escaping, safe replacement, the end-to-end CLI run, and a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import texplain.report.html_report as html_report
from analysis_helpers import ROWS, demo_runs, make_results
from texplain.analysis.analyse import analyse_results
from texplain.analysis.results import ResultsFolder
from texplain.cli import main
from texplain.errors import TexplainError
from texplain.report.browser import CHROMIUM_FLAGS, chromium_path, screenshot_sections
from texplain.report.config import ReportConfig
from texplain.report.html_report import MARKER, write_report

EVIL = "<img src=x onerror=alert(1)>"
CHROMIUM = chromium_path()


@pytest.fixture(scope="module")
def hand_results(tmp_path_factory) -> ResultsFolder:
    base = tmp_path_factory.mktemp("report")
    rows = [*ROWS, ("e1", "bird", "test", f"bird|{EVIL}", "bird", {"water": 40, "bird": 30}, {"bird": 30})]
    results = make_results(base / "results", rows=rows, image_dir=base / "images")
    return results


def test_report_content_and_escaping(hand_results, tmp_path):
    analysis = analyse_results(hand_results)
    index = write_report(tmp_path / "report", hand_results, analysis, config=ReportConfig(title=f"T {EVIL}"))
    html = index.read_text()
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    for name in ("bird", "car", "dog"):
        assert f'data-class="{name}"' in html
    assert 'id="accuracy"' in html and 'id="prior"' in html and "worst group" in html
    assert '<span class="suspect">water</span>' in html
    clouds = sorted(p.name for p in (tmp_path / "report" / "assets").glob("cloud_*"))
    assert clouds == [f"cloud_class-{i}_{s}.png" for i in range(3) for s in ("test", "train")
                      if not (i == 2 and s == "test")]  # dog has no test images
    with Image.open(tmp_path / "report" / "assets" / clouds[0]) as cloud:
        assert cloud.size == (480, 260)
    saved = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert saved["classes"]["bird"]["suspects"][0]["examples"][0].endswith("b2.png")
    referenced = {part.split('"')[0] for part in html.split('src="')[1:]}
    assert referenced and all((tmp_path / "report" / ref).is_file() for ref in referenced)


def test_a_report_replaces_an_old_one_only_when_complete(hand_results, tmp_path, monkeypatch):
    analysis = analyse_results(hand_results)
    folder = tmp_path / "report"
    write_report(folder, hand_results, analysis, config=ReportConfig(title="first"))
    write_report(folder, hand_results, analysis, config=ReportConfig(title="second"))
    assert "<title>second</title>" in (folder / "index.html").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(html_report, "render_template", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(folder, hand_results, analysis, config=ReportConfig(title="third"))
    assert "<title>second</title>" in (folder / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    with pytest.raises(TexplainError, match="not a texplain report; not replaced"):
        write_report(mine, hand_results, analysis)
    assert (mine / "index.html").read_text() == "my page" and not (mine / MARKER).exists()


@pytest.fixture(scope="module")
def demo(tiny_demo, tmp_path_factory) -> dict[str, Path]:
    return demo_runs(tiny_demo, tmp_path_factory.mktemp("demo_runs"))


def test_cli_end_to_end_on_the_demo_world(demo, tiny_demo, capsys):
    results = ResultsFolder.open(demo["results"])
    assert results.complete and len(results.done_images()) == 135  # 90 train + 45 test
    assert (demo["results"] / "prior.json").is_file() and not (demo["hidden"] / "prior.json").exists()
    html = (demo["report"] / "index.html").read_text()
    assert html.count('class="class-section"') == 3 and "Only background" in html
    assert any(p.name.startswith("top5-") for p in (demo["report"] / "assets").iterdir())
    saved = json.loads((demo["report"] / "analysis.json").read_text())
    assert saved["compare"] == ["train", "test"] and set(saved["only_background"]) == {"bird", "car", "dog"}
    assert all(c["images"] == 15 for c in saved["only_background"].values())
    prior = json.loads((demo["results"] / "prior.json").read_text())
    assert list(saved["prior_by_kind"]) == ["blank", "mean", "shuffled"] and "<th>after shuffled</th>" in html
    word = saved["prior_words"][0]["word"]
    mean = prior["by_kind"]["mean"]["counts"]
    assert saved["prior_by_kind"]["mean"][word] == pytest.approx(mean["document_counts"].get(word, 0) / mean["n_sentences"], abs=1e-4)

    assert main(["query", str(demo["results"]), "select split, count(*) as n from results group by split order by split",
                 "--format", "csv"]) == 0
    assert capsys.readouterr().out == "split,n\ntest,45\ntrain,90\n"
    assert main(["analyse", str(demo["results"]), "--out", str(demo["report"].parent / "r2"), "--compare", "train,val"]) == 2
    assert "no images in 'val'" in capsys.readouterr().err


def test_cli_refuses_bad_sets_with_one_line(tiny_demo, tmp_path, capsys):
    tree = tmp_path / "set"
    (tree / "bird").mkdir(parents=True)
    (tree / "car").mkdir()
    Image.new("RGB", (8, 8)).save(tree / "bird" / "a.png")
    args = ["--translator", str(tiny_demo / "translator"), "--out", str(tmp_path / "out"), "--samples", "2"]
    assert main(["explain-dataset", str(tree), *args]) == 2
    assert "empty class" in capsys.readouterr().err
    (tree / "car").rename(tree / "zebra")
    Image.new("RGB", (8, 8)).save(tree / "zebra" / "b.png")
    assert main(["explain-dataset", str(tree), *args]) == 2
    assert "labels not among the classifier's classes: zebra" in capsys.readouterr().err
    assert main(["explain-dataset", str(tiny_demo / "world/split/labels.jsonl"), "--split", "val", *args]) == 2
    assert "no images in split 'val'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium chromium-driver)")
def test_report_in_a_headless_browser(demo, tmp_path):
    from playwright.sync_api import sync_playwright

    index = demo["report"] / "index.html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(index.as_uri(), wait_until="load")
            sizes = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            assert len(sizes) > 10
            assert [s for s in sizes if not (s[1] and s[2] > 0)] == []
            assert page.is_visible("#overview") and not page.is_visible("#class-0")

            page.click("nav a.nav-class >> nth=0")
            assert page.is_visible("#class-0") and not page.is_visible("#overview")
            assert page.locator("#class-0 h1").inner_text().endswith("bird")
            assert page.is_visible("#class-0 img.cloud")
            page.screenshot(path=str(tmp_path / "class.png"), full_page=True)

            link = page.locator("#class-0 .thumbs a.example").first
            target = link.get_attribute("href").lstrip("#")
            link.click()
            assert page.is_visible(f"#{target}") and not page.is_visible("#class-0")
            assert page.locator(f"#{target} ul.sentences li").count() > 0
            page.screenshot(path=str(tmp_path / "image.png"), full_page=True)

            page.click("text=Accuracy per group")
            assert page.is_visible("#accuracy") and "worst group" in page.locator("#accuracy").inner_text()
        finally:
            browser.close()
    assert (tmp_path / "class.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium chromium-driver)")
def test_screenshots_of_the_overview_and_a_class_page(demo, tmp_path):
    from PIL import Image

    paths = screenshot_sections(demo["report"] / "index.html", tmp_path / "shots", ["nav a.nav-class >> nth=0"])
    assert [p.name for p in paths] == ["page-0.png", "page-1.png"]
    overview, first_class = (Image.open(p) for p in paths)
    assert overview.width == first_class.width == 1280
    assert overview.tobytes() != first_class.tobytes()  # the click showed another section
