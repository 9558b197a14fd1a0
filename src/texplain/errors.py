"""The one exception type that the command line turns into a one-line message.

Library code raises :class:`TexplainError` for anything a user can fix (a bad
file, a mismatched checkpoint, an impossible setting). Its message names the
thing at fault and the problem, on one line, so that ``texplain`` can print
``error: <message>`` and exit non-zero without a traceback.
"""

from __future__ import annotations


class TexplainError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class BadImageError(TexplainError):
    """An image that cannot be read or converted; a folder run skips it and reports it."""


def first_line(exc: BaseException) -> str:
    """The first line of a third-party exception's message, to quote inside one of ours."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
