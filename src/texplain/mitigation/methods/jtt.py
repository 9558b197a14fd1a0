"""JTT, Just Train Twice (Liu et al. 2021): the errors of a briefly trained model, up-weighted in a second training.

The identification model is the classifier's backbone with a fresh head,
fine-tuned as every method is (same trained layers and learning rates) for
``jtt_epochs`` (one): trained that briefly it has not fitted the samples
that go against the shortcut, so its errors on the tuned part are the
candidates. The classifier is then fine-tuned on the tuned part with each
error counted ``jtt_upweight`` times, stopping early on the held-out part
as it is. The paper trains the second model from the pretrained weights;
here, as for every method, it starts from the classifier being mitigated.
"""

from __future__ import annotations

import torch

from texplain.mitigation.bench import Bench, Method
from texplain.models.classifiers import Classifier, replace_head


class JTT(Method):
    """Up-weight what a briefly trained identification model gets wrong."""

    name = "jtt"
    label = "JTT"

    def run(self, bench: Bench, seed: int) -> tuple[Classifier, dict]:
        pixels, tuned = bench.train_pixels, torch.tensor(bench.tuned, dtype=torch.long)
        identifier = bench.load()
        torch.manual_seed(seed)
        replace_head(identifier.module, len(identifier.class_names))
        identifier, _ = bench.fine_tune(pixels, bench.tuned, None, seed, "JTT's identification model",
                                        epochs=bench.config.jtt_epochs, classifier=identifier)
        errors = tuned[bench.predict_train(identifier, bench.tuned) != bench.train_labels[tuned]]  # (e,) positions in train
        train = bench.tuned + errors.repeat(bench.config.jtt_upweight - 1).tolist()
        classifier, history = bench.fine_tune(pixels, train, bench.held, seed, self.label)
        return classifier, {"fine_tuned_on": len(train), "errors": len(errors), "history": history.to_json()}
