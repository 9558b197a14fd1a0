"""SQL over a results folder with DuckDB, and a few named questions.

Two views are defined over the committed Parquet parts (never over a part a
killed run left unlisted):

* ``results``: one row per image, the columns of
  the results schema (:mod:`texplain.analysis.results`) (image, label, split, group, predicted,
  confidence, correct, top5, n_sentences, top_word, words, class_mentions,
  sentences);
* ``words``: one row per (image, word): image, label, split, group,
  predicted, word, count (sentences that say it), frequency (count over the
  image's sentences).

``docs/queries.md`` lists useful queries. The named ones
(:data:`CANNED`) take one argument, passed as a bound parameter, never
pasted into the SQL. A query reads the results and nothing else
(:func:`connect`'s sandbox): one read-only statement, over DuckDB with
external access off.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from texplain.analysis.results import ResultsFolder
from texplain.errors import TexplainError, first_line
from texplain.optional import require

WORDS_VIEW = """
create view words as
select r.image, r.label, r.split, r."group", r.predicted, w.word as word, w.count as count,
       w.count / r.n_sentences as frequency
from results r, unnest(r.words) as u(w)
"""


@dataclass(frozen=True)
class CannedQuery:
    """A named question: what it answers, and its SQL with one ``$arg`` parameter (or none)."""

    help: str
    sql: str
    needs_arg: bool = True


CANNED: dict[str, CannedQuery] = {
    "top-word": CannedQuery(
        "images whose most frequent word is ARG",
        "select image, label, split, predicted, confidence from results where top_word = $arg order by label, image",
    ),
    "word": CannedQuery(
        "images whose sentences say ARG, strongest first",
        "select image, label, split, predicted, frequency from words where word = $arg order by frequency desc, image",
    ),
    "class-top-words": CannedQuery(
        "the 20 words said most often for images labelled ARG",
        "select word, sum(count) as sentences, round(sum(count) / (select sum(n_sentences) from results "
        "where label = $arg), 4) as frequency from words where label = $arg group by word "
        "order by sentences desc, word limit 20",
    ),
    "misclassified": CannedQuery(
        "images the classifier gets wrong, most confident first",
        "select image, label, predicted, confidence, top_word from results where not correct "
        "order by confidence desc, image",
        needs_arg=False,
    ),
}


@dataclass
class QueryResult:
    """Column names and rows of a query."""

    columns: list[str]
    rows: list[tuple]

    def format(self, style: str = "table") -> str:
        """As an aligned text table, CSV or JSON lines."""
        if style == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(self.columns)
            writer.writerows(self.rows)
            return buffer.getvalue()
        if style == "json":
            return "".join(json.dumps(dict(zip(self.columns, row)), default=str, ensure_ascii=False) + "\n" for row in self.rows)
        if style != "table":
            raise TexplainError(f"query: format must be table, csv or json, got {style!r}")
        cells = [self.columns] + [[_cell(v) for v in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines) + f"\n({len(self.rows)} rows)\n"


SANDBOX = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
    "temp_directory": "",
}
"""DuckDB settings at connection: no extension installed or loaded, no secret stored, nothing spilled to disk."""

READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")
"""The statements a query may be: reading the views, or showing how DuckDB would."""


def connect(folder: str | os.PathLike):
    """An in-memory DuckDB connection with the ``results`` and ``words`` views over ``folder``, sandboxed.

    DuckDB reads the committed part files and nothing else: external access
    is off (no other file, no network, no ``ATTACH``, ``COPY`` or
    ``INSTALL``), the part files are the only paths allowed, and the
    configuration is locked so a query cannot turn any of it back on.
    """
    duckdb = require("duckdb", "SQL over results")
    results = ResultsFolder.open(folder)
    parts = [str(p.resolve()) for p in results.part_paths()]
    if not parts:
        raise TexplainError(f"{folder}: no explained images yet")
    connection = duckdb.connect(config=SANDBOX)
    try:
        connection.execute("set allowed_paths = $parts", {"parts": parts})
        connection.execute("set enable_external_access = false")
        connection.execute("set lock_configuration = true")
        listing = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
        connection.execute(f"create view results as select * from read_parquet([{listing}])")
        connection.execute(WORDS_VIEW)
    except duckdb.Error as exc:
        connection.close()
        results.check_parts()
        raise TexplainError(f"{folder}: its parts cannot be read ({first_line(exc)})") from exc
    return connection


def run_query(folder: str | os.PathLike, sql: str, parameters: Mapping[str, object] | Sequence | None = None) -> QueryResult:
    """Run one read-only statement ``sql`` against the views of ``folder``; a DuckDB error is a one-line :class:`TexplainError`.

    Only ``SELECT`` (with ``WITH``, ``DESCRIBE``, ``SUMMARIZE``, ``FROM …``)
    and ``EXPLAIN`` run; anything that would change the database is refused.
    """
    duckdb = require("duckdb", "SQL over results")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise TexplainError(f"query: {first_line(exc)}") from exc
    if len(statements) != 1:
        raise TexplainError("query: no SQL given" if not statements else
                            f"query: one statement at a time, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise TexplainError(f"query: only SELECT queries run over results, not {kind}")
    connection = connect(folder)
    try:
        cursor = connection.execute(sql, parameters) if parameters else connection.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        ResultsFolder.open(folder).check_parts()  # a damaged part: name it, and how to redo it
        raise TexplainError(f"query: {first_line(exc)}") from exc
    finally:
        connection.close()
    return QueryResult(columns, rows)


def run_canned(folder: str | os.PathLike, name: str, argument: str | None = None) -> QueryResult:
    """Run the named query ``name`` (see :data:`CANNED`) with its argument."""
    if name not in CANNED:
        raise TexplainError(f"query: no named query {name!r} (known: {', '.join(CANNED)})")
    query = CANNED[name]
    if query.needs_arg and not argument:
        raise TexplainError(f"query: {name} needs an argument ({query.help})")
    return run_query(folder, query.sql, {"arg": argument} if query.needs_arg else None)


def _cell(value: object) -> str:
    """A value as table text: floats to 4 places, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
