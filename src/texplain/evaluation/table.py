"""An evaluation report's metrics as the plain-text table ``texplain evaluate`` prints."""

from __future__ import annotations

from texplain.evaluation.scores import BASELINES, CONDITIONS


def format_table(report: dict) -> str:
    """The report's metrics as a plain-text table: the three rows, then the margins (absolute and relative)."""
    header = f"{'metric':<22}{'explanation':>12}{'null-prefix':>12}{'shuffled':>10}{'vs null':>18}{'vs shuffled':>18}  beats both"
    lines = [header, "-" * len(header)]
    for name in metric_names(report):
        row = report[name]
        cells = [_cell(row[c]) for c in CONDITIONS] + [_margin(row, base) for base in BASELINES]
        lines.append(f"{name:<22}{cells[0]:>12}{cells[1]:>12}{cells[2]:>10}{cells[3]:>18}{cells[4]:>18}  "
                     f"{'yes' if row['beats_baselines'] else 'NO'}")
    return "\n".join(lines)


def metric_names(report: dict) -> list[str]:
    """Keys of the report that hold a metric's three rows."""
    return [k for k, v in report.items() if isinstance(v, dict) and "explanation" in v and "beats_baselines" in v]


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _margin(row: dict, base: str) -> str:
    """'+0.026 (+11%)': the explanation's lead over one baseline."""
    margin, relative = row[f"margin_vs_{base}"], row[f"relative_margin_vs_{base}"]
    if margin is None:
        return "n/a"
    return f"{margin:+.3f}" + (f" ({relative:+.0%})" if relative is not None else "")
