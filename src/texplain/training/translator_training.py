"""Train the translator on (image, caption) pairs; the classifier and the LM stay frozen.

The loss is the frozen LM's cross-entropy on the caption tokens that follow
the translated prefix (:meth:`texplain.models.lm.FrozenLM.caption_loss`). Only the
translator's parameters are in the optimizer. Training runs in phases, like
the paper's 20 epochs on a mix of caption sets followed by 5 epochs of
fine-tuning on one: each phase has its own pairs, epochs and learning rate,
with its own linear warm-up and cosine decay.

After every epoch a checkpoint (translator, optimizer and scheduler state,
history) is written to ``<out>/checkpoint`` atomically; ``resume=True``
continues from the last finished epoch. Shuffling and dropout are seeded per
(phase, epoch), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from texplain.atomic import building_folder, write_json
from texplain.data.captions import CaptionPair
from texplain.errors import TexplainError
from texplain.locking import locked_folder
from texplain.models.classifiers import Classifier
from texplain.models.features import ExtractionConfig, FeatureStore, extract_features
from texplain.models.lm import FrozenLM
from texplain.models.translator import (
    Translator,
    load_translator,
    new_translator,
    save_translator,
)
from texplain.training.batching import shuffled_batches
from texplain.training.schedule import warmup_cosine
from texplain.weights import load_torch_state

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
STATE_KEYS = frozenset({"optimizer", "scheduler", "phase", "epoch", "history"})


@dataclass
class TrainConfig:
    """Optimisation settings shared by all phases.

    batch_size: pairs per step. weight_decay: AdamW's. warmup_steps: linear
    warm-up at the start of each phase (capped at a tenth of the phase).
    clip: gradient-norm clipping. max_tokens: caption tokens kept (EOS
    included). seed: shuffling and dropout. device: where the translator and
    LM run.
    """

    batch_size: int = 64
    weight_decay: float = 0.01
    warmup_steps: int = 100
    clip: float = 1.0
    max_tokens: int = 40
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_tokens < 2:
            raise TexplainError("training: batch_size must be ≥ 1 and max_tokens ≥ 2")
        if self.clip <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise TexplainError("training: clip must be > 0, weight_decay and warmup_steps ≥ 0")


@dataclass
class Phase:
    """One stage of training: its (image, caption) pairs, epochs and peak learning rate."""

    name: str
    pairs: Sequence[CaptionPair]
    epochs: int
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.lr <= 0:
            raise TexplainError(f"training phase {self.name}: epochs must be ≥ 0 and lr > 0")
        if self.epochs and not self.pairs:
            raise TexplainError(f"training phase {self.name}: no (image, caption) pairs")


@dataclass
class History:
    """Loss per finished epoch: rows of {phase, epoch, train_loss, dev_loss, steps}."""

    epochs: list[dict] = field(default_factory=list)


def train_translator(
    translator: Translator,
    lm: FrozenLM,
    store: FeatureStore,
    phases: Sequence[Phase],
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    dev_pairs: Sequence[CaptionPair] = (),
    resume: bool = False,
    progress: bool = True,
) -> History:
    """Train ``translator`` through ``phases``; writes ``<out_dir>/translator.*`` and history.

    Pairs whose image is not in ``store`` are refused (one message naming the
    first such image), because silently dropping them would change the data.
    ``out_dir`` is locked for the run (:mod:`texplain.locking`): a second run
    into it stops instead of interleaving checkpoints.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    with locked_folder(out):
        device = torch.device(config.device)
        lm.to(device)
        translator.to(device)
        bank = _FeatureBank(store, [p for ph in phases for p in ph.pairs] + list(dev_pairs))
        history, start = History(), (0, 0)
        state = _load_checkpoint(out, translator) if resume else None
        if state is not None:
            history = History(state["history"])
            start = (state["phase"], state["epoch"] + 1)
            log.info("resuming after phase %d epoch %d", state["phase"], state["epoch"])
        elif resume:
            log.info("nothing to resume in %s; starting fresh", out)

        for phase_no, phase in enumerate(phases):
            if phase_no < start[0] or phase.epochs == 0:
                continue
            optimizer = torch.optim.AdamW(
                [p for p in translator.parameters() if p.requires_grad], lr=phase.lr, weight_decay=config.weight_decay
            )
            steps_per_epoch = math.ceil(len(phase.pairs) / config.batch_size)
            scheduler = warmup_cosine(optimizer, min(config.warmup_steps, steps_per_epoch * phase.epochs // 10 + 1), steps_per_epoch * phase.epochs)
            first_epoch = start[1] if phase_no == start[0] else 0
            if state is not None and phase_no == start[0]:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            for epoch in range(first_epoch, phase.epochs):
                train_loss = _run_epoch(translator, lm, bank, phase, epoch, phase_no, optimizer, scheduler, config, progress)
                dev_loss = evaluate_loss(translator, lm, bank, dev_pairs, config) if dev_pairs else None
                row = {"phase": phase.name, "epoch": epoch + 1, "train_loss": train_loss, "dev_loss": dev_loss}
                history.epochs.append(row)
                log.info("%s epoch %d/%d: train loss %.4f%s", phase.name, epoch + 1, phase.epochs, train_loss,
                         "" if dev_loss is None else f", dev loss {dev_loss:.4f}")
                _save_checkpoint(out, translator, optimizer, scheduler, phase_no, epoch, history)
        save_translator(translator.cpu(), out)
        write_json(out / HISTORY_FILE, asdict(history))
    return history


def fit_translator(
    classifier: Classifier,
    lm: FrozenLM,
    phases: Sequence[Phase],
    out_dir: str | os.PathLike,
    settings: Mapping[str, object] | None = None,
    config: TrainConfig | None = None,
    dev_pairs: Sequence[CaptionPair] = (),
    features: str | os.PathLike | None = None,
    extraction: ExtractionConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[Translator, History]:
    """Extract the features of every pair's image, then train a new translator for ``classifier`` and ``lm``.

    Features are cached in ``features`` (default ``<out_dir>/features``), so a
    second run extracts nothing. Pairs whose image cannot be read are dropped
    (and logged); a phase left with no pairs is an error. ``settings`` are the
    translator's shape-free settings (see :func:`~texplain.models.translator.new_translator`).
    Returns the trained translator and its loss history.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    paths = list(dict.fromkeys(str(p.image) for ph in phases for p in ph.pairs))
    paths += [p for p in dict.fromkeys(str(p.image) for p in dev_pairs) if p not in set(paths)]
    classifier.to(config.device)
    store, skipped = extract_features(classifier, paths, features or out / "features", extraction, progress=progress)
    bad = {path for path, _ in skipped}
    if bad:
        for phase in phases:
            if phase.epochs and all(str(p.image) in bad for p in phase.pairs):
                raise TexplainError(f"training phase {phase.name}: none of its images could be read ({skipped[0][1]})")
        phases = [replace(ph, pairs=[p for p in ph.pairs if str(p.image) not in bad]) for ph in phases]
        dev_pairs = [p for p in dev_pairs if str(p.image) not in bad]
    translator = new_translator(classifier, lm, store.token_shape, **dict(settings or {}))
    history = train_translator(translator, lm, store, phases, out, config, dev_pairs, resume, progress)
    return translator, history


def evaluate_loss(
    translator: Translator, lm: FrozenLM, bank: "_FeatureBank", pairs: Sequence[CaptionPair], config: TrainConfig
) -> float:
    """Mean caption loss over ``pairs`` with the translator in eval mode (no dropout, running BN stats)."""
    translator.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(pairs), config.batch_size):
            batch = pairs[start : start + config.batch_size]
            total += _batch_loss(translator, lm, bank, batch, config).item() * len(batch)
            count += len(batch)
    return total / max(count, 1)


class _FeatureBank:
    """All features the pairs need, loaded once into memory: path → row of a (N, T, D) tensor."""

    def __init__(self, store: FeatureStore, pairs: Sequence[CaptionPair]):
        paths = list(dict.fromkeys(str(p.image) for p in pairs))
        missing = [p for p in paths if p not in store]
        if missing:
            raise TexplainError(
                f"{missing[0]}: no features for this image in {store.folder} ({len(missing)} images missing); "
                "extract them first"
            )
        self.rows = {p: i for i, p in enumerate(paths)}
        self.features = store.load_all(paths)  # (N, T, D)

    def batch(self, pairs: Sequence[CaptionPair], device: torch.device) -> Tensor:
        index = torch.tensor([self.rows[str(p.image)] for p in pairs])
        return self.features[index].to(device, torch.float32)  # (B, T, D)


def _run_epoch(translator, lm, bank, phase, epoch, phase_no, optimizer, scheduler, config, progress) -> float:
    """One pass over the phase's pairs in random batches (not of similar lengths: see
    :func:`~texplain.training.batching.shuffled_batches`), shuffled by a generator seeded from (seed, phase, epoch)."""
    translator.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + phase_no * 1009 + epoch)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    batches = shuffled_batches(len(phase.pairs), config.batch_size, generator)
    total, count = 0.0, 0
    bar = tqdm(batches, desc=f"{phase.name} {epoch + 1}/{phase.epochs}", unit="batch", disable=not progress, leave=False)
    for indices in bar:
        loss = _batch_loss(translator, lm, bank, [phase.pairs[i] for i in indices], config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(translator.parameters(), config.clip)
        optimizer.step()
        scheduler.step()
        total += loss.item() * len(indices)
        count += len(indices)
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


def _batch_loss(translator, lm: FrozenLM, bank: _FeatureBank, pairs: Sequence[CaptionPair], config: TrainConfig) -> Tensor:
    device = lm.device
    prefix = translator(bank.batch(pairs, device))  # (B, K, d)
    ids, mask = lm.tokenize_captions([p.caption for p in pairs], config.max_tokens)  # (B, L)
    return lm.caption_loss(prefix, ids.to(device), mask.to(device))


def _save_checkpoint(out: Path, translator, optimizer, scheduler, phase_no: int, epoch: int, history: History) -> None:
    """Write the resumable state to a temporary folder and swap it in for ``checkpoint``."""
    device = next(translator.parameters()).device
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "phase": phase_no,
        "epoch": epoch,
        "history": history.epochs,
    }
    with building_folder(out / CHECKPOINT_DIR) as tmp:
        save_translator(translator.cpu(), tmp)
        torch.save(state, tmp / STATE_FILE)
    translator.to(device)


def _load_checkpoint(out: Path, translator: Translator) -> dict | None:
    """Restore the translator's weights from the last checkpoint; returns its state or None.

    A damaged checkpoint is an error that says how to start over.
    """
    folder = out / CHECKPOINT_DIR
    if not (folder / STATE_FILE).is_file():
        return None
    try:
        saved = load_translator(folder)
        state = load_torch_state(folder / STATE_FILE)
        missing = sorted(STATE_KEYS - state.keys())
        if missing:
            raise TexplainError(f"{folder / STATE_FILE}: not a training state (no {', '.join(missing)})")
    except TexplainError as exc:
        raise TexplainError(f"{exc}; run without --resume to start over") from exc
    if saved.config != translator.config:
        raise TexplainError(f"{folder}: the checkpoint's translator config differs from this run's; use another --out")
    translator.load_state_dict(saved.state_dict())
    return state
