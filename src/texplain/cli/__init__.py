"""The ``texplain`` command line: parse, build a config, make one library call, exit.

Commands live in one module per group (:mod:`.models`, :mod:`.explain`,
:mod:`.dataset`, :mod:`.evaluation`, :mod:`.mitigation`, :mod:`.demo`) and
share their options (:mod:`.options`); each imports the library it needs
when it runs, so ``texplain --help`` starts without loading torch.

Every user-fixable problem is a :class:`~texplain.errors.TexplainError` and
comes out as one line, ``error: <message>``, with exit code 2; usage errors
exit 2 as well. :func:`main` takes the argument list, so tests call it
directly.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer

from texplain.cli import dataset, demo, evaluation, explain, mitigation, models
from texplain.errors import TexplainError

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
    app.command(_name)(_command)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv``; returns the exit code instead of exiting."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="texplain", standalone_mode=False)
    except TexplainError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        typer.echo("aborted", err=True)
        return 130
    return 0


def run() -> None:
    """Console-script entry point.

    Sets OpenMP's passive wait policy before torch loads: with the default
    spinning threads, a busy second core makes two-thread torch several
    times slower.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
