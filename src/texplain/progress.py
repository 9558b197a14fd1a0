"""Progress bars on a terminal; elsewhere (a file, a CI log) a plain line per step or per few percent.

A tqdm bar redraws itself with ``\\r`` many times a second: on a terminal
that is one line that moves, in ``make demo > log 2>&1`` it is thousands of
updates in one line. :class:`tqdm` is tqdm's bar (the notebook widget in
Jupyter) where the output is a terminal, and otherwise writes whole lines
only: one per step for a bar of at most :data:`STEPS` steps, one per
``100 / STEPS`` percent for a longer one, one per :data:`SECONDS` for a bar
whose total is unknown, and a last line when it closes. Use it as tqdm::

    from texplain.progress import tqdm
    for batch in tqdm(batches, desc="train", unit="batch", disable=not progress): ...
"""

from __future__ import annotations

import math
import sys

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.autonotebook import tqdm as _autonotebook_tqdm
from tqdm.std import tqdm as _std_tqdm

STEPS = 20
"""Lines per bar of known length when the output is not a terminal (every 5%)."""

SECONDS = 30.0
"""Seconds between lines of a bar whose total is unknown when the output is not a terminal."""

_IN_NOTEBOOK = _autonotebook_tqdm is not _std_tqdm

_KNOWN_TOTAL = "{desc}: {percentage:3.0f}% ({n_fmt}/{total_fmt}) [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_UNKNOWN_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


class tqdm(_auto_tqdm):  # named like tqdm's own class: a drop-in
    """tqdm's bar on a terminal or in a notebook; plain lines elsewhere (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        file = kwargs.get("file")
        output = file if file is not None else sys.stderr
        self._lines = not _IN_NOTEBOOK and not _is_terminal(output)
        self._shown: tuple[int, float] | None = None  # (mark, n) of the last line written
        if self._lines:
            kwargs.update(mininterval=0, miniters=1)  # let every update reach display(), which picks the lines
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Draw the bar (terminal), or write a line when the bar has passed its next mark (elsewhere)."""
        if not self._lines:
            return super().display(msg, pos)
        if msg is not None or self.n == 0:  # tqdm clearing the line, or nothing done yet
            return False
        mark = self._mark()
        if self._shown is None or mark != self._shown[0]:
            self._write_line(mark)
        return True

    def close(self) -> None:
        """A last line with the final count and time, unless the last line already says it."""
        if self._lines and not self.disable and self.n and (self._shown is None or self._shown[1] != self.n):
            self._write_line(self._mark())
        if self._lines:
            self.leave = False  # tqdm's own close only clears the line: nothing to clear here
        super().close()

    def _mark(self) -> int:
        """Which line this state belongs to: a step, a 1/STEPS of the total, or a SECONDS interval."""
        if self.total:
            return self.n if self.total <= STEPS else math.floor(self.n * STEPS / self.total)
        return math.floor(self._time() - self.start_t) // int(SECONDS)

    def _write_line(self, mark: int) -> None:
        bar_format = _KNOWN_TOTAL if self.total else _UNKNOWN_TOTAL
        self.fp.write(self.format_meter(**{**self.format_dict, "bar_format": bar_format}) + "\n")
        self.fp.flush()
        self._shown = (mark, self.n)


def _is_terminal(output: object) -> bool:
    isatty = getattr(output, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
