"""Which LM prior lets a planted shortcut through: the null prefixes pooled, or the kind that says a word least?

Each run's prior is explained again, once, with its per-kind counts
(blank, mean, shuffled, the LM alone; the run's own sampling settings), into a
copy of its results folder; the copy is then analysed three times: with the
kinds that go through the translator pooled (as a prior file without per-kind
counts is read), with the least-saying of those three, and with the
least-saying of all four (texplain's rule); each class's suspects are compared
with its planted places. Demo runs are analysed by predicted class, BAR by label.

    python benchmarks/prior_rule.py --demo runs/demo-s0 runs/demo-s1 ... \\
        --bar runs/bar --translator runs/flickr8k/translator --lm runs/flickr8k/lm

Writes ``benchmarks/results/prior_rule.json`` and ``prior_rule.md``; a minute or two on two cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bar_analysis import PLACES

from texplain.analysis.analyse import analyse_folders
from texplain.analysis.config import AnalysisConfig, PriorConfig
from texplain.analysis.lm_prior import LMPrior, explain_prior, null_features
from texplain.analysis.results import PRIOR, ResultsFolder
from texplain.atomic import write_json
from texplain.demo.captions import BACKGROUND_WORDS
from texplain.demo.splits import planted_background
from texplain.generate.config import ExplainConfig, SamplingConfig
from texplain.models.explainer import load_explainer
from texplain.models.features import FeatureStore
from texplain.text.class_vocabulary import class_vocabularies, word_index
from texplain.text.config import ClassWordConfig, WordConfig

RESULTS = Path(__file__).parent / "results"


def explain_config(settings: dict) -> ExplainConfig:
    """The sampling and word settings a results folder was explained with (the configs read their own JSON form)."""
    return ExplainConfig(sampling=SamplingConfig(**settings["sampling"]), words=WordConfig(**settings["words"]),
                         word_cloud=False)


def reexplain_prior(results: Path, features: Path, classifier: Path, translator: Path, lm: Path, copy: Path) -> None:
    """Copy ``results`` (without features) to ``copy`` and write its prior again, per kind."""
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("features"))
    folder = ResultsFolder.open(copy)
    settings = folder.settings
    explain = explain_config(settings)
    explainer = load_explainer(str(translator), str(classifier), str(lm), "cpu", False)
    vocabularies = class_vocabularies(explainer.classifier.class_names,
                                      ClassWordConfig.from_json(settings["class_words"]), explain.words)
    store = FeatureStore(features)
    paths = [p for p in folder.done_images() if p in store]
    config = PriorConfig(seed=explain.sampling.seed)
    null = null_features(config, explainer.classifier, store, paths)
    prior = explain_prior(explainer.translator, explainer.lm, null, explain, word_index(vocabularies), config.samples)
    write_json(copy / PRIOR, prior.to_dict())


RULES = {"pooled": "the translator's kinds pooled", "least_translated": "least-saying of the translator's kinds",
         "least": "least-saying kind, the LM alone too (texplain's)"}


def translated_prior(prior: LMPrior) -> LMPrior:
    """The prior of the kinds that go through the translator (the LM alone left out), pooled and per kind."""
    return LMPrior.of_kinds({kind: sample for kind, sample in prior.by_kind.items() if kind != "lm"}, prior.counter.config)


def suspects_by_rule(copy: Path, by: str, places: dict[str, list[str]]) -> dict:
    """Per rule (:data:`RULES`) and class: the suspects and whether a planted place is among them."""
    data = json.loads((copy / PRIOR).read_text())
    translated = translated_prior(LMPrior.from_dict(data)).to_dict()
    folders = {"least": copy}
    for rule, prior in (("pooled", {k: v for k, v in translated.items() if k != "by_kind"}),
                        ("least_translated", translated)):
        folders[rule] = copy.parent / rule
        shutil.copytree(copy, folders[rule])
        write_json(folders[rule] / PRIOR, prior)
    out = {}
    for rule in RULES:
        _, analysis, _ = analyse_folders(folders[rule], AnalysisConfig(by=by))
        out[rule] = {name: {"suspects": [s.word for s in report.suspects],
                            "planted_found": bool({s.word for s in report.suspects} & set(places.get(name, [])))}
                     for name, report in analysis.classes.items()}
    planted = sorted({w for ws in places.values() for w in ws})
    out["prior_by_kind"] = {kind: {w: round(f, 3) for w, f in words.items()}
                            for kind, words in LMPrior.from_dict(data).frequencies_by_kind(planted).items()}
    return out


def demo_row(run: Path) -> dict:
    settings = json.loads((run / "demo_settings.json").read_text())["settings"]
    places = {name: [BACKGROUND_WORDS[planted_background(name)]] for name in settings["classes"]}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results"
        reexplain_prior(run / "results", run / "features", run / "classifier", run / "translator", run / "lm", copy)
        found = suspects_by_rule(copy, "predicted", places)
    label = f"demo {settings['classifier']} pretrain {settings['pretrain_epochs']} seed {settings['seed']} ({run.name})" + \
        (" balanced" if settings["balanced"] else "")
    return {"run": label, **found}


def bar_row(run: Path, translator: Path, lm: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "results"
        reexplain_prior(run / "results", run / "results" / "features", run / "classifier", translator, lm, copy)
        return {"run": "BAR (head-only EfficientNet-Lite0)", **suspects_by_rule(copy, "label", PLACES)}


def table(rows: list[dict]) -> str:
    lines = ["| run | " + " | ".join(f"planted found, {name}" for name in RULES.values())
             + " | suspects the LM alone adds |", "|---|---|---|---|---|"]
    for row in rows:
        cells = []
        for rule in RULES:
            hits = sum(c["planted_found"] for c in row[rule].values())
            cells.append(f"{hits} of {len(row[rule])}")
        differ = {n: sorted(set(c["suspects"]) - set(row["least_translated"][n]["suspects"])) for n, c in row["least"].items()}
        cells.append("; ".join(f"{n}: +{', '.join(w)}" for n, w in differ.items() if w) or "none")
        lines.append(f"| {row['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, nargs="*", default=[], help="Demo run folders")
    parser.add_argument("--bar", type=Path, help="A benchmarks/bar_analysis.py run folder")
    parser.add_argument("--translator", type=Path, help="BAR's translator")
    parser.add_argument("--lm", type=Path, help="BAR's LM")
    args = parser.parse_args()
    rows = [demo_row(run) for run in args.demo]
    if args.bar:
        rows.append(bar_row(args.bar, args.translator, args.lm))
    write_json(RESULTS / "prior_rule.json", rows)
    (RESULTS / "prior_rule.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
