"""The command line's shared options: one default each, the library's; help without loading the models."""

from __future__ import annotations

import inspect
import subprocess
import sys

from texplain.analysis.lm_prior import DEFAULT_KINDS
from texplain.cli import COMMANDS, options
from texplain.cli.dataset import PRIOR_KINDS
from texplain.generate.sampling import SamplingConfig


def test_sampling_defaults_are_the_librarys():
    library = SamplingConfig()
    assert (options.SAMPLES, options.TOP_P, options.MIN_WORDS, options.MAX_WORDS, options.SEED,
            options.SAMPLE_BATCH) == (library.num_samples, library.top_p, library.min_words, library.max_words,
                                      library.seed, library.batch_size)
    assert PRIOR_KINDS.split(",") == list(DEFAULT_KINDS)


def test_every_command_that_samples_takes_the_shared_lengths():
    shared = {"top_p": options.TOP_P, "min_words": options.MIN_WORDS, "max_words": options.MAX_WORDS}
    sampling = [name for name, command in COMMANDS.items() if "min_words" in inspect.signature(command).parameters]
    assert sorted(sampling) == ["evaluate", "explain", "explain-dataset", "mitigate"]
    for name in sampling:
        parameters = inspect.signature(COMMANDS[name]).parameters
        assert {key: parameters[key].default for key in shared} == shared, name


def test_help_does_not_import_torch():
    script = "import sys\nfrom texplain.cli import main\nmain(['--help'])\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("False"), done.stdout[-500:] + done.stderr[-500:]


def test_analyse_defaults_are_the_suspect_rules():
    from texplain.analysis.suspects import SuspectRule

    rule, parameters = SuspectRule(), inspect.signature(COMMANDS["analyse"]).parameters
    assert (parameters["min_frequency"].default, parameters["min_lift"].default, parameters["min_z"].default,
            parameters["suspects"].default) == (rule.min_frequency, rule.min_lift, rule.min_z, rule.limit)


def test_demo_defaults_are_the_demo_configs():
    from texplain.demo.run import DemoConfig

    config, parameters = DemoConfig(), inspect.signature(COMMANDS["demo"]).parameters
    shared = [name for name in parameters if name in DemoConfig.__dataclass_fields__]
    assert set(parameters) - set(shared) == {"samples_mode"}  # turned into samples and adaptive
    assert {name: parameters[name].default for name in shared} == {name: getattr(config, name) for name in shared}
