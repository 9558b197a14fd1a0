"""ERM: the classifier as it was trained, untouched; every other method is measured against it."""

from __future__ import annotations

from texplain.mitigation.bench import Bench, Method
from texplain.models.classifiers import Classifier


class ERM(Method):
    """The original classifier; the same for every seed."""

    name = "erm"
    label = "ERM"

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        return bench.classifier, {"fine_tuned_on": 0}
