"""``python -m texplain``: the command line, also for launchers that start a module (``accelerate launch -m texplain``)."""

from texplain.cli import run

run()
