"""Progress bars: tqdm's on a terminal, whole lines (no carriage returns) in a file or a CI log.

Bars are enabled explicitly: a machine that sets TQDM_DISABLE=1 (as GPU runs do) turns off every default one.
"""

from __future__ import annotations

import io

from texplain.progress import STEPS, tqdm


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_file_a_long_bar_writes_a_line_per_few_percent_and_no_carriage_return() -> None:
    out = io.StringIO()
    with tqdm(total=1000, desc="explain", unit="img", file=out, disable=False) as bar:
        for _ in range(1000):
            bar.update(1)
            bar.set_postfix(loss="0.5")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == STEPS + 1  # the first step, then every 5%
    assert lines[-1].startswith("explain: 100% (1000/1000)") and lines[-1].endswith("loss=0.5]")


def test_in_a_file_a_short_bar_writes_a_line_per_step_and_an_open_ended_one_on_close() -> None:
    out = io.StringIO()
    assert len(list(tqdm(range(5), desc="epochs", file=out, disable=False))) == 5
    counts = [line.split(" (")[1].split(")")[0] for line in out.getvalue().splitlines()]
    assert counts == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    out = io.StringIO()
    bar = tqdm(desc="features", unit="img", file=out, disable=False)
    bar.update(10)
    bar.update(5)
    bar.close()
    assert [line.split(" [")[0] for line in out.getvalue().splitlines()] == ["features: 10", "features: 15"]


def test_a_disabled_bar_writes_nothing() -> None:
    out = io.StringIO()
    for _ in tqdm(range(50), file=out, disable=True):
        pass
    assert out.getvalue() == ""


def test_on_a_terminal_the_bar_redraws_in_place() -> None:
    out = Terminal()
    for _ in tqdm(range(3), desc="epochs", file=out, mininterval=0, disable=False):
        pass
    assert "\r" in out.getvalue() and "epochs: 100%|" in out.getvalue()
