"""The ``texplain`` command line: parse, build a config, make one library call, exit.

Commands live in one module per group (:mod:`.models`, :mod:`.explain`,
:mod:`.dataset`, :mod:`.evaluation`, :mod:`.mitigation`, :mod:`.demo`) and
share their options (:mod:`.options`); each imports the library it needs
when it runs, so ``texplain --help`` starts without loading torch.

Every user-fixable problem is a :class:`~texplain.errors.TexplainError` and
comes out as one line, ``error: <message>``, with exit code 2; so do usage
errors (a bad option value, an unknown option or command). :func:`main`
takes the argument list, so tests call it directly.

What counts as the user's input at the top level (:data:`INPUT_ERRORS`):
besides :class:`~texplain.errors.TexplainError`, an ``OSError`` (the
system refused a file, a folder, the disk or the network: the user's
machine, not texplain's logic) and a ``ValueError`` (Python's "right type,
wrong value", what third-party readers raise on a damaged file or a bad
value). Both come out as one line too, with a hint that ``TEXPLAIN_DEBUG=1``
shows where they came from. Every other exception (``TypeError``,
``KeyError``, ``AttributeError``, ``IndexError``, ``RuntimeError``, ...) is a
bug in texplain and shows its traceback; with ``TEXPLAIN_DEBUG=1`` every
error does, the user's too.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from texplain.cli import dataset, demo, evaluation, explain, mitigation, models, options
from texplain.errors import TexplainError, first_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Explain what a frozen image classifier has learned, in words.",
)

COMMANDS = {
    "pretrain-lm": models.pretrain_lm_command,
    "train": models.train_command,
    "explain": explain.explain_command,
    "demo": demo.demo_command,
    "explain-dataset": dataset.explain_dataset_command,
    "hide-foreground": dataset.hide_foreground_command,
    "analyse": dataset.analyse_command,
    "query": dataset.query_command,
    "evaluate": evaluation.evaluate_command,
    "rating-export": evaluation.rating_export_command,
    "rating-score": evaluation.rating_score_command,
    "mitigate": mitigation.mitigate_command,
}
for _name, _command in COMMANDS.items():
    app.command(_name, cls=options.Command)(_command)

INPUT_ERRORS = (TexplainError, OSError, ValueError)
"""What the top level reports as the user's problem, in one line (see the module docstring)."""

DEBUG = "TEXPLAIN_DEBUG"
"""Set to 1 to see every error's traceback instead of its one line."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv``; returns the exit code instead of exiting."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="texplain", standalone_mode=False)
    except options.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # no arguments at all: the help, not an error
        else:
            where = exc.ctx.command_path if exc.ctx is not None else "texplain"
            typer.echo(f"error: {' '.join(exc.format_message().split())} (see {where} --help)", err=True)
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except INPUT_ERRORS as exc:
        if os.environ.get(DEBUG, "") not in ("", "0"):
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def _one_line(exc: BaseException) -> str:
    """The message of one of :data:`INPUT_ERRORS`: a TexplainError's own; an OSError's file and reason; else its first line."""
    if isinstance(exc, TexplainError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        where = f"{exc.filename} → {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        text = f"{where}: {exc.strerror or first_line(exc)}"
    else:
        text = first_line(exc)
    return " ".join(f"{text} ({DEBUG}=1 shows where it came from)".split())


def run() -> None:
    """Console-script entry point.

    Sets OpenMP's passive wait policy before torch loads: with the default
    spinning threads, a busy second core makes two-thread torch several
    times slower.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
