"""The command line's options: every default is its settings' own, one name per idea, old names still work, help without torch."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from texplain.analysis.config import AnalysisConfig, DatasetExplainConfig
from texplain.cli import COMMANDS, app, main, options
from texplain.demo.config import DemoConfig
from texplain.errors import TexplainError
from texplain.evaluation.config import CAUSAL_FILLS, RATING_WORDS, EvaluateConfig
from texplain.generate.config import ExplainConfig
from texplain.mitigation.config import MASK_FILLS, MaskConfig, MitigateConfig
from texplain.models.config import ExtractionConfig, TranslatorConfig
from texplain.report.config import ReportConfig
from texplain.training.config import CaptionLMConfig, Phase, TrainConfig


def sampling(path: str) -> dict:
    """The sampling options, read from the SamplingConfig at ``path`` in the command's settings."""
    return {
        "samples": lambda c: options.samples_default(_get(c, path)),
        "stop_k": f"{path}.stop.k", "top_p": f"{path}.top_p", "min_words": f"{path}.min_words",
        "max_words": f"{path}.max_words", "sample_batch": lambda c: str(_get(c, path).batch_size),
        "seed": f"{path}.seed",
    }


def _get(settings: object, path: str) -> object:
    for name in path.split("."):
        settings = getattr(settings, name)
    return settings


SETTINGS = {
    "explain": (ExplainConfig, {**sampling("sampling"), "top_words": "words.top_k"}),
    "explain-dataset": (DatasetExplainConfig, {
        **sampling("explain.sampling"), "examples": "explain.examples", "chunk_size": "chunk_size",
        "fp16": "extraction.fp16", "wordnet": "class_words.wordnet", "prior": lambda c: ",".join(c.prior.kinds),
        "allow_unknown_labels": "allow_unknown_labels"}),
    "analyse": (AnalysisConfig, {
        "by": "by", "compare": "compare", "top_words": "top_words", "suspects": "suspects.limit",
        "min_frequency": "suspects.min_frequency", "min_z": "suspects.min_z", "min_lift": "suspects.min_lift",
        "suspect_split": "suspect_split",
        "images_per_class": lambda c: ReportConfig().images_per_class, "title": lambda c: ReportConfig().title}),
    "evaluate": (EvaluateConfig, {
        **sampling("sampling"), "seed": "seed", "top_words": "words.top_k", "precision_k": "precision_k",
        "null_prefix": "null_prefix", "minilm": "minilm", "bert": "bert", "sanity_images": "sanity_images",
        "cascade": "cascade", "causal_images": "causal_images", "mask_heat": "mask.heat",
        "mask_layer": "mask.layer", "mask_grid": "mask.grid", "mask_window": "mask.window",
        "mask_threshold": "mask.threshold", "mask_fill": "mask.fill"}),
    "mitigate": (MitigateConfig, {
        **sampling("selection.sampling"), "seed": lambda c: c.seeds[0], "seeds": lambda c: len(c.seeds),
        "trust_code": "trust_code", "methods": lambda c: ",".join(c.methods), "min_frequency": "selection.min_frequency",
        "min_lift": "selection.min_lift", "wordnet": "selection.class_words.wordnet", "mask_localise": "mask.localise",
        "mask_heat": "mask.heat", "mask_layer": "mask.layer", "mask_grid": "mask.grid", "mask_window": "mask.window",
        "mask_threshold": "mask.threshold", "mask_fill": "mask.fill", "epochs": "finetune.epochs",
        "keep_originals": "keep_originals", "spread_masks": "spread_masks", "spare_class": "spare_class",
        "masktune_epochs": "masktune_epochs", "jtt_upweight": "jtt_upweight",
        "lr": "finetune.lr", "batch_size": "finetune.batch_size", "finetune": "finetune.trainable",
        "patience": "finetune.patience", "backbone_lr": "finetune.backbone_lr", "select": "selection.rule",
        "select_top": "selection.top", "select_threshold": "selection.threshold",
        "holdout": "holdout", "jtt_epochs": "jtt_epochs", "min_per_class": "min_per_class", "device": "device"}),
    "demo": (DemoConfig, {
        **{name: name for name in ("out", "seed", "fresh", "balanced", "bias", "train_images", "test_images",
                                   "caption_images", "classifier", "pretrain_epochs", "classifier_epochs", "device")},
        "samples": lambda c: options.samples_default(c.sampling)}),
    "train": (TrainConfig, {
        "batch_size": lambda c: str(c.batch_size), "accumulation": "accumulation", "mixed_precision": "mixed_precision",
        "content_weight": "content_weight", "feature_memory": "feature_memory_gb", "seed": "seed", "device": "device",
        "lr": lambda c: Phase("train", [], 0).lr, "fp16": lambda c: ExtractionConfig().fp16,
        "hidden": lambda c: TranslatorConfig(1, 1, 1).hidden, "mode": lambda c: TranslatorConfig(1, 1, 1).mode,
        "dropout": lambda c: TranslatorConfig(1, 1, 1).dropout}),
    "pretrain-lm": (CaptionLMConfig, {"epochs": "epochs", "seed": "seed"}),
    "rating-export": (None, {"top_words": lambda c: RATING_WORDS}),
}
"""Per command, its settings class and, per parameter, where in the settings its default is declared."""

OWN = {
    "explain": {"target", "translator", "out", "classifier", "trust_code", "lm", "device"},
    "explain-dataset": {"data", "translator", "out", "split", "classifier", "trust_code", "lm", "features", "class_words",
                        "device", "engine", "address", "actors", "cpus_per_actor"},
    "analyse": {"results", "out", "only_background"},
    "evaluate": {"translator", "captions", "split", "images_dir", "images", "limit", "classifier", "trust_code", "lm",
                 "json_file", "device"},
    "mitigate": {"out", "data", "demo", "classifier", "translator", "lm", "train_split", "test_split", "class_words",
                 "limit", "json_file", "head_only"},  # --head-only: the old --finetune head, hidden
    "demo": set(),
    "train": {"classifier", "lm", "captions", "out", "features", "finetune_captions", "split", "dev_split", "epochs",
              "finetune_epochs", "finetune_lr", "prefix_len", "feature_layer", "trust_code", "limit", "resume"},
    "pretrain-lm": {"captions", "out", "split"},
    "hide-foreground": {"data", "masks", "out", "split"},
    "query": {"results", "sql", "top_word", "word", "class_top_words", "misclassified", "format"},
    "rating-export": {"source", "out", "limit"},
    "rating-score": {"answers", "json_file"},
}
"""Parameters with no setting in the library: inputs, outputs, and choices the command line alone makes."""


def test_every_parameter_is_a_setting_or_the_commands_own():
    assert set(SETTINGS) | set(OWN) == set(COMMANDS)
    for name, command in COMMANDS.items():
        parameters = set(inspect.signature(command).parameters)
        mapped = set(SETTINGS.get(name, (None, {}))[1])
        assert parameters == mapped | OWN[name], name
        assert not mapped & OWN[name], name


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_default_is_the_settings_default(name):
    """A default declared twice (the command line and its settings) could drift: each is read from the settings."""
    settings, where = SETTINGS[name]
    instance = settings() if settings not in (None, TranslatorConfig, Phase) else None
    parameters = inspect.signature(COMMANDS[name]).parameters
    for parameter, path in where.items():
        expected = path(instance) if callable(path) else _get(instance, path)
        assert parameters[parameter].default == expected, f"{name} --{parameter.replace('_', '-')}"


def test_commands_that_need_other_defaults_say_so_in_their_settings():
    """Evaluation explains each image three times and mitigation every training image: fewer sentences, in their settings."""
    shared = ExplainConfig().sampling
    assert EvaluateConfig().sampling.num_samples < shared.num_samples
    assert MitigateConfig().selection.sampling.num_samples < shared.num_samples
    for other in (EvaluateConfig().sampling, MitigateConfig().selection.sampling, DemoConfig().sampling):
        assert (other.top_p, other.min_words, other.max_words, other.batch_size) == (
            shared.top_p, shared.min_words, shared.max_words, shared.batch_size)
    rule = AnalysisConfig().suspects
    selection = MitigateConfig().selection
    assert (selection.min_frequency, selection.min_lift) == (rule.min_frequency, rule.min_lift)


@pytest.mark.parametrize("config", [ExplainConfig().sampling, EvaluateConfig().sampling, DemoConfig().sampling,
                                    MitigateConfig().selection.sampling, DatasetExplainConfig().explain.sampling])
def test_the_sampling_options_left_at_their_defaults_give_the_settings_back(config):
    built = options.sampling_config(config, options.samples_default(config), config.stop.k, str(config.batch_size),
                                    top_p=config.top_p, min_words=config.min_words, max_words=config.max_words,
                                    seed=config.seed)
    assert built == config


def test_samples_takes_a_number_auto_or_a_capped_auto():
    base = ExplainConfig().sampling
    assert (options.sampling_config(base, "300").num_samples, options.sampling_config(base, "300").adaptive) == (300, False)
    auto = options.sampling_config(base, "auto", stop_k=5)
    assert (auto.num_samples, auto.adaptive, auto.stop.k, auto.stop.tolerance) == (base.num_samples, True, 5, 2)
    assert (options.sampling_config(base, "auto:400").num_samples, options.sampling_config(base, "auto:400").adaptive) == (
        400, True)
    assert [options.check_samples(v) for v in ("12", " AUTO ", "auto:050")] == ["12", "auto", "auto:50"]
    for bad in ("0", "auto:0", "many", "auto:", "autox:5", "-3", "100001"):
        with pytest.raises(typer.BadParameter):
            options.check_samples(bad)


def test_the_demo_carries_a_whole_sampling_config():
    config = DemoConfig(seed=2, sampling=options.sampling_config(DemoConfig().sampling, "auto:40"))
    assert (config.sampling.num_samples, config.sampling.adaptive, config.sampling.top_p, config.sampling.seed) == (
        40, True, 0.95, 2)
    assert DemoConfig(sampling={"num_samples": 7, "max_words": 9}).sampling.max_words == 9  # as read back from JSON


def test_every_mask_fill_is_made_somewhere():
    from texplain.attribution.fills import FILLS

    assert MASK_FILLS == FILLS
    assert set(CAUSAL_FILLS) == set(MASK_FILLS) - {"shuffle"}


def test_evaluate_takes_every_mask_option_but_whose_region():
    """The causal check finds a word's region as mitigation does (the same options), and only a word's."""
    params = parsed("evaluate", ["--mask-grid", "6", "--mask-window", "3", "--mask-layer", "features"])
    assert (params["mask_grid"], params["mask_window"], params["mask_layer"]) == (6, 3, "features")
    assert "mask_localise" not in params
    with pytest.raises(TexplainError, match="word's region"):
        EvaluateConfig(mask=MaskConfig(localise="class", fill="zero"))
    with pytest.raises(TexplainError, match="mask fill 'shuffle'"):
        EvaluateConfig(mask=MaskConfig())


# Old names: accepted for one release, hidden from the help.

OLD_VALUES = {"--samples": "7", "--top-words": "7", "--mask-localise": "class", "--mask-heat": "gradcam",
              "--mask-layer": "features", "--mask-grid": "4", "--mask-window": "1", "--mask-threshold": "0.3",
              "--mask-fill": "zero", "DATA": "labels.jsonl"}
REQUIRED = {"explain": ["x.jpg", "--translator", "t", "--out", "o"], "explain-dataset": ["d", "--translator", "t", "--out", "o"],
            "evaluate": ["--translator", "t", "--captions", "c"], "mitigate": ["--out", "o"], "demo": [],
            "rating-export": ["r.json", "--out", "o"]}


def parsed(name: str, args: list[str]) -> dict:
    """The parameters the command would run with (its options parsed and checked, nothing run)."""
    group = typer.main.get_command(app)
    command = group.get_command(group.make_context("texplain", [name, "--help"], resilient_parsing=True), name)
    return command.make_context(name, [*REQUIRED[name], *args]).params


@pytest.mark.parametrize("name,old,new", [(name, old, new) for name, table in options.OLD_NAMES.items()
                                          for old, new in table.items()])
def test_every_old_name_still_works_and_is_hidden(name, old, new, capsys):
    value = OLD_VALUES[new]
    given_new = [value] if new == "DATA" else [new, value]
    assert parsed(name, [old, value]) == parsed(name, given_new)
    assert main([name, "--help"]) == 0
    shown = capsys.readouterr().out
    assert f" {old} " not in shown and f" {old}\n" not in shown and new.lower() in shown.lower()


def test_an_option_given_by_its_old_and_new_names_must_agree(capsys):
    assert parsed("explain", ["--samples", "auto", "-n", "300"])["samples"] == "auto:300"  # as before: -n capped auto
    assert parsed("mitigate", ["--heat", "occlusion", "--mask-heat", "occlusion"])["mask_heat"] == "occlusion"
    code = main(["explain", "x.jpg", "--translator", "t", "--out", "o", "--samples", "30", "--num-samples", "40"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--samples 30 and --num-samples 40 disagree" in err[0], err


def test_one_name_per_idea_across_commands():
    """The words kept are --top-words everywhere, a labelled set is DATA, a JSON file --json and a folder --out."""
    group = typer.main.get_command(app)
    context = group.make_context("texplain", ["--help"], resilient_parsing=True)
    names: dict[str, set[str]] = {}
    for name in COMMANDS:
        for parameter in group.get_command(context, name).params:
            names.setdefault(parameter.name, set()).update(parameter.opts if parameter.param_type_name == "option"
                                                           else [parameter.metavar or parameter.name.upper()])
    assert all(opts == {f"--{key.replace('_', '-')}"} for key, opts in names.items()
               if key not in ("classifier", "json_file", "data", "target", "results", "source", "answers", "sql")), names
    assert names["classifier"] == {"--classifier", "-c"} and names["json_file"] == {"--json"} and names["data"] == {"DATA"}


def test_docs_cli_md_names_every_setting_option_and_old_name():
    table = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    shown = {f"--{parameter.replace('_', '-')}" for name, (_, where) in SETTINGS.items() if name != "demo"
             for parameter in where}
    old = {name for table in options.OLD_NAMES.values() for name in table}
    assert {name for name in shown | old if f"`{name}" not in table} == set()


def test_help_does_not_import_torch():
    script = ("import sys\nfrom texplain.cli import main\nmain(['--help'])\n"
              "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'PIL') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("[]"), done.stdout[-500:] + done.stderr[-500:]
