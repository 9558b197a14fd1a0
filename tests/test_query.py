"""SQL and named queries over the Parquet results (DuckDB)."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from analysis_helpers import make_results, settings
from texplain.analysis.query import run_canned, run_query
from texplain.analysis.results import ResultsFolder
from texplain.cli import main
from texplain.errors import TexplainError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("query") / "results"
    make_results(path)
    return path


def test_sql_over_the_results_view(folder):
    result = run_query(folder, "select label, count(*) as n, sum(n_sentences) as s from results group by label order by label")
    assert result.columns == ["label", "n", "s"]
    assert result.rows == [("bird", 3, 300), ("car", 2, 200), ("dog", 1, 100)]


def test_words_view_has_one_row_per_image_and_word(folder):
    result = run_query(folder, "select image, word, count, frequency from words where word = 'water' order by image")
    assert result.rows == [("b1", "water", 80, 0.8), ("b2", "water", 90, 0.9), ("b3", "water", 20, 0.2), ("c2", "water", 10, 0.1)]


def test_canned_queries(folder):
    assert [r[0] for r in run_canned(folder, "top-word", "water").rows] == ["b1", "b2"]
    assert [(r[0], r[-1]) for r in run_canned(folder, "word", "grass").rows] == [("b3", 0.6), ("d1", 0.5)]
    top = run_canned(folder, "class-top-words", "bird").rows
    assert top[0] == ("water", 190, pytest.approx(190 / 300, abs=1e-4))
    assert [r[0] for r in run_canned(folder, "misclassified").rows] == ["b3"]


def test_arguments_are_bound_not_pasted(folder):
    assert run_canned(folder, "top-word", "x' or '1'='1").rows == []


def test_formats(folder):
    result = run_canned(folder, "top-word", "water")
    table = result.format("table").splitlines()
    assert table[0].split() == ["image", "label", "split", "predicted", "confidence"] and table[-1] == "(2 rows)"
    rows = list(csv.reader(io.StringIO(result.format("csv"))))
    assert rows[0][0] == "image" and rows[1][:2] == ["b1", "bird"]
    assert [json.loads(line)["image"] for line in result.format("json").splitlines()] == ["b1", "b2"]
    with pytest.raises(TexplainError, match="format must be"):
        result.format("xml")


def test_errors_are_one_line(folder, tmp_path):
    with pytest.raises(TexplainError, match="^query: Parser Error"):
        run_query(folder, "selec nothing")
    with pytest.raises(TexplainError, match="no named query 'nope'"):
        run_canned(folder, "nope", "x")
    with pytest.raises(TexplainError, match="needs an argument"):
        run_canned(folder, "word")
    ResultsFolder.open(tmp_path / "empty", settings(), create=True)
    with pytest.raises(TexplainError, match="no explained images yet"):
        run_query(tmp_path / "empty", "select 1")


def test_a_part_left_by_a_killed_run_is_not_queried(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shutil.copy(copy / "parts" / "part-00000.parquet", copy / "parts" / "part-00003.parquet")
    assert run_query(copy, "select count(*) from results").rows == [(6,)]


def test_query_command(folder, capsys):
    assert main(["query", str(folder), "--top-word", "water"]) == 0
    out = capsys.readouterr().out
    assert "b1" in out and "b2" in out and "(2 rows)" in out
    assert main(["query", str(folder), "select count(*) as n from results", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n6\n"
    assert main(["query", str(folder), "select 1", "--word", "water"]) == 2
    assert "give either SQL or one of" in capsys.readouterr().err
    assert main(["query", str(folder / "nope"), "select 1"]) == 2
    assert "not a results folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["query", "{folder}", "--top-word", "water"],
                                     ["analyse", "{folder}", "--out", "{report}"]])
def test_reading_results_never_imports_torch(folder, tmp_path, command):
    """``query`` and ``analyse`` on existing results run with torch, transformers and timm made unimportable."""
    import subprocess
    import sys

    argv = [part.format(folder=folder, report=tmp_path / "report") for part in command]
    script = (
        "import sys\n"
        "class Blocked:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'timm'):\n"
        "            raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Blocked())\n"
        "from texplain.cli import main\n"
        f"code = main({argv!r})\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None], 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
