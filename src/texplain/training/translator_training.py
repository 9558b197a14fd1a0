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

The same code trains in one process or in several (:mod:`.replicas`:
``accelerate launch`` or ``torchrun``). ``batch_size`` is the global batch,
one optimizer step: it is split into ``accumulation`` micro-batches, each
shared out over the processes. Every process draws the same shuffled
batches, takes its share, and the caption loss is summed over all of them
and divided by the caption tokens of the whole batch, with batch-norm
statistics over the whole micro-batch; so a step is the same on any number
of processes, and a checkpoint resumes on another number. Only dropout
masks (drawn per process) differ. The main process writes checkpoints.

Pairs come from caption files, or from streamed sets too large for memory
(:mod:`texplain.data.caption_shards`): their features are extracted in a
stream into the store, with each sample's captions in its row, and the
pairs are read back from there. The processes extract one share each.

On a GPU, batches are made to keep it busy: ``batch_size="auto"`` measures
what a pair costs in memory and takes as many as fit (:func:`auto_batch_size`),
features go to the GPU from pinned memory without waiting, and the loss is
read back only every :data:`LOSS_EVERY` steps; training runs in bfloat16 by
default there (:mod:`.replicas`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from texplain.atomic import building_folder, write_json
from texplain.data.caption_shards import CaptionShards
from texplain.data.captions import CaptionPair
from texplain.errors import TexplainError
from texplain.generate.device_plan import free_memory, rows_that_fit
from texplain.locking import locked_folder
from texplain.models.classifiers import Classifier
from texplain.models.config import ExtractionConfig
from texplain.models.features import FeatureStore, ImageItem, extract_into, open_store
from texplain.models.lm import FrozenLM
from texplain.models.translator import (
    Translator,
    load_translator,
    new_translator,
    save_translator,
)
from texplain.progress import tqdm
from texplain.training.config import Phase, TrainConfig
from texplain.training.content_weights import content_weights
from texplain.training.replicas import Replicas
from texplain.training.schedule import warmup_cosine
from texplain.weights import load_torch_state

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
STATE_KEYS = frozenset({"optimizer", "scheduler", "phase", "epoch", "history"})

CPU_AUTO_BATCH = 64
"""What ``batch_size="auto"`` is on a CPU: there is no device memory to fill, so the default's size."""

AUTO_MAX_BATCH = 1024
"""Most pairs per process and micro-batch under ``batch_size="auto"`` (the paper trains with 512)."""

AUTO_MEMORY_SHARE = 0.7
"""Share of the free GPU memory an "auto" micro-batch may take (the optimizer holds a few MB)."""

PROBE_PAIRS = 8
"""Pairs of the step that measures a pair's memory for ``batch_size="auto"``."""

LOSS_EVERY = 25
"""Steps between reads of the running loss (each read waits for the GPU)."""


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
    replicas: Replicas | None = None,
) -> History:
    """Train ``translator`` through ``phases``; writes ``<out_dir>/translator.*`` and history.

    Pairs whose image is not in ``store`` are refused (one message naming the
    first such image), because silently dropping them would change the data.
    ``replicas``: the processes training together (default: as launched).
    ``out_dir`` is locked for the run (:mod:`texplain.locking`): a second run
    into it stops instead of interleaving checkpoints.
    """
    config = config or TrainConfig()
    replicas = replicas or Replicas.start(config.device, config.mixed_precision)
    out = Path(out_dir)
    with locked_folder(out) if replicas.is_main else contextlib.nullcontext():
        history = _train(translator, lm, store, phases, out, config, dev_pairs, resume, replicas, progress)
    replicas.barrier()
    return history


def _train(translator: Translator, lm: FrozenLM, store: FeatureStore, phases: Sequence[Phase], out: Path,
           config: TrainConfig, dev_pairs: Sequence[CaptionPair], resume: bool, replicas: Replicas,
           progress: bool) -> History:
    """The body of :func:`train_translator`, run while the main process holds ``out``'s lock."""
    lm.to(replicas.device)
    translator.to(replicas.device)
    bank = _FeatureBank(store, [p for ph in phases for p in ph.pairs] + list(dev_pairs), config.feature_memory_gb)
    history, start = History(), (0, 0)
    state = _load_checkpoint(out, translator) if resume else None
    if state is not None:
        history = History(state["history"])
        start = (state["phase"], state["epoch"] + 1)
        log.info("resuming after phase %d epoch %d", state["phase"], state["epoch"])
    elif resume:
        log.info("nothing to resume in %s; starting fresh", out)
    if config.batch_size == "auto":
        chosen = state.get("batch_size") if state is not None else None
        chosen = chosen or auto_batch_size(translator, lm, bank, [p for ph in phases for p in ph.pairs], config, replicas)
        config = replace(config, batch_size=chosen)
        log.info("batch size auto: %d pairs per step", chosen)
    model = replicas.wrap(translator)

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
        stepper = replicas.prepare(optimizer)
        for epoch in range(first_epoch, phase.epochs):
            train_loss = _run_epoch(model, lm, bank, phase, epoch, phase_no, stepper, scheduler, config, replicas, progress)
            dev_loss = evaluate_loss(translator, lm, bank, dev_pairs, config, replicas) if dev_pairs else None
            row = {"phase": phase.name, "epoch": epoch + 1, "train_loss": train_loss, "dev_loss": dev_loss}
            history.epochs.append(row)
            if replicas.is_main:
                log.info("%s epoch %d/%d: train loss %.4f%s", phase.name, epoch + 1, phase.epochs, train_loss,
                         "" if dev_loss is None else f", dev loss {dev_loss:.4f}")
                _save_checkpoint(out, translator, optimizer, scheduler, phase_no, epoch, history, config.batch_size)
    replicas.unwrap(model)
    translator.cpu()
    if replicas.is_main:
        save_translator(translator, out)
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
    second run extracts nothing; the phases' streamed sets are extracted
    there too and give their pairs from it. Pairs whose image cannot be read
    are dropped (and logged); a phase left with no pairs is an error. The
    translator's initial weights are drawn from ``config.seed``, so the same
    seed trains the same translator. ``settings`` are the translator's
    shape-free settings (see :func:`~texplain.models.translator.new_translator`).
    Returns the trained translator and its loss history.
    """
    config = config or TrainConfig()
    replicas = Replicas.start(config.device, config.mixed_precision)
    out = Path(out_dir)
    classifier.to(replicas.device)
    store, skipped = _extract(classifier, phases, dev_pairs, Path(features or out / "features"), extraction, replicas,
                              progress)
    phases = [replace(ph, pairs=list(ph.pairs) + [p for s in ph.streams for p in _stream_pairs(store, s)], streams=())
              if ph.streams else ph for ph in phases]
    bad = {str(p.image) for ph in phases for p in ph.pairs} - set(store.rows)
    if bad:
        reason = f" ({skipped[0][1]})" if skipped else ""
        for phase in phases:
            if phase.epochs and all(str(p.image) in bad for p in phase.pairs):
                raise TexplainError(f"training phase {phase.name}: none of its images could be read{reason}")
        phases = [replace(ph, pairs=[p for p in ph.pairs if str(p.image) not in bad]) for ph in phases]
    dev_pairs = [p for p in dev_pairs if str(p.image) in store]
    with torch.random.fork_rng(devices=[]):  # the seed, not whatever drew from torch's generator before, sets the start
        torch.manual_seed(config.seed)
        translator = new_translator(classifier, lm, store.token_shape, **dict(settings or {}))
    history = train_translator(translator, lm, store, phases, out, config, dev_pairs, resume, progress, replicas)
    return translator, history


def auto_batch_size(translator: Translator, lm: FrozenLM, bank: "_FeatureBank", pairs: Sequence[CaptionPair],
                    config: TrainConfig, replicas: Replicas) -> int:
    """The global batch of ``batch_size="auto"``: per process, the micro-batch that fits in its GPU's free memory.

    One step of :data:`PROBE_PAIRS` pairs (:func:`_probe_step`) measures the
    memory a pair takes; :func:`global_batch` turns it into the batch. On a
    CPU: :data:`CPU_AUTO_BATCH`.
    """
    if replicas.device.type != "cuda":
        return CPU_AUTO_BATCH
    torch.cuda.synchronize(replicas.device)
    before = torch.cuda.memory_allocated(replicas.device)
    torch.cuda.reset_peak_memory_stats(replicas.device)
    probed = _probe_step(translator, lm, bank, pairs, config, replicas)
    per_pair = (torch.cuda.max_memory_allocated(replicas.device) - before) / probed
    micro = replicas.least(_micro_batch(free_memory(replicas.device), int(per_pair)))
    return global_batch(micro, replicas.world, config.accumulation, len(pairs))


def global_batch(micro: int, world: int, accumulation: int, pairs: int) -> int:
    """Pairs per step when each of ``world`` processes holds ``micro``: times processes and micro-batches, at most ``pairs``."""
    return max(2, min(micro * world * accumulation, pairs))


def _micro_batch(free_bytes: int, pair_bytes: int) -> int:
    """Pairs that fit in :data:`AUTO_MEMORY_SHARE` of the free memory: at most :data:`AUTO_MAX_BATCH`, a multiple of 8.

    Fewer than 8 pairs are taken as they are.
    """
    micro = rows_that_fit(free_bytes, pair_bytes, most=AUTO_MAX_BATCH, share=AUTO_MEMORY_SHARE)
    return micro // 8 * 8 or micro


def _probe_step(translator: Translator, lm: FrozenLM, bank: "_FeatureBank", pairs: Sequence[CaptionPair],
                config: TrainConfig, replicas: Replicas) -> int:
    """A forward and backward pass of the :data:`PROBE_PAIRS` pairs with the longest captions; returns how many.

    The translator is in eval mode for it (its batch-norm statistics and the
    random state stay as they were) and its gradients are dropped after, so
    training goes on as if it had not happened.
    """
    longest = sorted(pairs, key=lambda p: len(p.caption), reverse=True)[:PROBE_PAIRS]
    ids, mask = lm.tokenize_captions([p.caption for p in longest], config.max_tokens)
    training = translator.training
    translator.eval()
    with replicas.autocast():
        prefix = translator(bank.batch(longest, replicas.device))  # (b, K, d)
        loss = lm.caption_loss(prefix, ids.to(replicas.device), mask.to(replicas.device))
    loss.backward()
    translator.zero_grad(set_to_none=True)
    translator.train(training)
    return len(longest)


def evaluate_loss(
    translator: Translator, lm: FrozenLM, bank: "_FeatureBank", pairs: Sequence[CaptionPair], config: TrainConfig,
    replicas: Replicas | None = None,
) -> float:
    """Mean caption loss over ``pairs`` in batches, the translator in eval mode (no dropout, running BN stats).

    Over several processes each takes every ``world``-th batch.
    """
    replicas = replicas or Replicas(0, 1, lm.device)
    translator.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(replicas.rank * config.batch_size, len(pairs), replicas.world * config.batch_size):
            batch = pairs[start : start + config.batch_size]
            ids, mask = lm.tokenize_captions([p.caption for p in batch], config.max_tokens)
            with replicas.autocast():
                prefix = translator(bank.batch(batch, lm.device))
                loss = lm.caption_loss(prefix, ids.to(lm.device), mask.to(lm.device))
            total += loss.item() * len(batch)
            count += len(batch)
    return replicas.total(total) / max(replicas.total(count), 1)


class _FeatureBank:
    """The features the pairs need: path → row of a (N, T, D) tensor in memory, or read from the store per batch."""

    def __init__(self, store: FeatureStore, pairs: Sequence[CaptionPair], memory_gb: float = 4.0):
        paths = list(dict.fromkeys(str(p.image) for p in pairs))
        missing = [p for p in paths if p not in store]
        if missing:
            raise TexplainError(
                f"{missing[0]}: no features for this image in {store.folder} ({len(missing)} images missing); "
                "extract them first"
            )
        self.store = store
        self.rows = {p: i for i, p in enumerate(paths)}
        in_memory = store.nbytes(len(paths)) <= memory_gb * 2**30
        self.features = store.load_all(paths) if in_memory else None  # (N, T, D)
        if not in_memory:
            log.info("features of %d images exceed %.1f GB: read per batch from %s", len(paths), memory_gb, store.folder)

    def batch(self, pairs: Sequence[CaptionPair], device: torch.device) -> Tensor:
        """The pairs' features (B, T, D) in float32 on ``device``; to a GPU from pinned memory, without waiting."""
        if self.features is None:
            rows = self.store.features([str(p.image) for p in pairs])  # (B, T, D)
        else:
            rows = self.features[torch.tensor([self.rows[str(p.image)] for p in pairs])]  # (B, T, D)
        if device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(device, non_blocking=True).float()  # (B, T, D)


def _extract(
    classifier: Classifier, phases: Sequence[Phase], dev_pairs: Sequence[CaptionPair], folder: Path,
    extraction: ExtractionConfig | None, replicas: Replicas, progress: bool,
) -> tuple[FeatureStore, list[tuple[str, str]]]:
    """Features of the pairs' image files and the streamed sets' samples, each process extracting its share.

    Returns the store with every process's shards, and this process's skipped (image, reason).
    """
    paths = list(dict.fromkeys(str(p.image) for p in [*(p for ph in phases for p in ph.pairs), *dev_pairs]))
    store = open_store(folder, classifier, extraction) if replicas.is_main else None
    replicas.barrier()  # the main process made the store: the others open it
    store = store or open_store(folder, classifier, extraction)
    writer = f"p{replicas.rank}" if replicas.world > 1 else ""
    shown = progress and replicas.is_main
    mine = (ImageItem(p) for p in paths[replicas.rank :: replicas.world])
    skipped = extract_into(store, classifier, mine, extraction, writer, shown)
    for stream in dict.fromkeys(s for ph in phases for s in ph.streams):
        samples = (ImageItem(s.key, {"captions": list(s.captions), "stream": [s.shard, s.position]}, s.image)
                   for s in stream.samples(replicas.rank, replicas.world))
        skipped += extract_into(store, classifier, samples, extraction, writer, shown)
    replicas.barrier()
    return (FeatureStore(folder) if replicas.world > 1 else store), skipped


def _stream_pairs(store: FeatureStore, stream: CaptionShards) -> list[CaptionPair]:
    """A streamed set's pairs, from its samples' rows in the store, in the set's order (its first ``limit`` only)."""
    order = stream.order()
    rows = sorted(((order[row["stream"][0]], row["stream"][1]), row) for row in store.rows.values()
                  if "stream" in row and row["stream"][0] in order)
    rows = [row for _, row in rows][: stream.limit]
    return [CaptionPair(row["path"], caption) for row in rows for caption in row["captions"]]


def _run_epoch(model, lm, bank, phase, epoch, phase_no, optimizer, scheduler, config, replicas, progress) -> float:
    """One pass over the phase's pairs, shuffled by a generator seeded from (seed, phase, epoch).

    Batches are random samples, not of similar caption lengths as for the
    caption LM: a batch of one length is often a batch of one kind of image
    (one scene described by one template), and batch norm then scales away
    what tells them apart.
    """
    model.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + phase_no * 1009 + epoch)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) + replicas.rank)
    order = torch.randperm(len(phase.pairs), generator=generator).tolist()
    batches = _batches(order, config.batch_size, max(2, replicas.world * config.accumulation), phase.name)
    total, count = torch.zeros((), device=replicas.device), 0
    bar = tqdm(batches, desc=f"{phase.name} {epoch + 1}/{phase.epochs}", unit="batch",
               disable=not (progress and replicas.is_main), leave=False)
    for number, indices in enumerate(bar, 1):
        loss = _step(model, lm, bank, [phase.pairs[i] for i in indices], optimizer, config, replicas)
        scheduler.step()
        total += loss * len(indices)
        count += len(indices)
        if number % LOSS_EVERY == 0:
            bar.set_postfix(loss=f"{replicas.total(float(total)) / count:.3f}")
    return replicas.total(float(total)) / max(count, 1)


def _batches(order: list[int], size: int, least: int, phase: str) -> list[list[int]]:
    """``order`` in batches of ``size``; a last batch of fewer than ``least`` joins the one before.

    ``least`` is 2 (batch norm needs two samples) or, when more, one pair for
    each process in each micro-batch.
    """
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    if len(batches) > 1 and len(batches[-1]) < least:
        batches[-2] += batches.pop()
    if batches and len(batches[0]) < least:
        raise TexplainError(f"training phase {phase}: {len(order)} pairs cannot be shared out as {least} parts")
    return batches


def _step(model: nn.Module, lm: FrozenLM, bank: _FeatureBank, pairs: Sequence[CaptionPair], optimizer,
          config: TrainConfig, replicas: Replicas) -> Tensor:
    """One optimizer step on the global batch ``pairs``: this process's micro-batches; its share of the mean loss (0-dim).

    Each micro-batch's loss is its caption tokens' summed cross-entropy over
    the tokens of the whole batch (all processes), times the number of
    processes because data parallelism averages the gradients. The share is
    a tensor on the device, so that nothing waits for it; over the processes
    the shares add up to the batch's mean.
    """
    parts = _my_parts(pairs, config.accumulation, replicas)
    captions = [lm.tokenize_captions([p.caption for p in part], config.max_tokens) for part in parts]  # (b, L) each
    if config.content_weight != 1.0:
        captions = [(ids, content_weights(lm.tokenizer, [p.caption for p in part], ids, mask, config.content_weight))
                    for part, (ids, mask) in zip(parts, captions)]
    scored = replicas.total(float(sum(float(mask.sum()) for _, mask in captions)))
    optimizer.zero_grad(set_to_none=True)
    mine = torch.zeros((), device=replicas.device)
    for number, (part, (ids, mask)) in enumerate(zip(parts, captions)):
        with replicas.accumulating(model, more=number < len(parts) - 1):
            with replicas.autocast():
                prefix = model(bank.batch(part, replicas.device))  # (b, K, d)
                loss = lm.caption_loss(prefix, ids.to(replicas.device), mask.to(replicas.device), scored)
            replicas.backward(loss * replicas.world)
        mine += loss.detach().float()
    replicas.clip(model.parameters(), config.clip)
    optimizer.step()
    return mine


def _my_parts(pairs: Sequence[CaptionPair], micro_batches: int, replicas: Replicas) -> list[Sequence[CaptionPair]]:
    """This process's share of each of the batch's micro-batches (contiguous slices, the same on any number of processes)."""
    parts = []
    for j in range(micro_batches):
        micro = pairs[j * len(pairs) // micro_batches : (j + 1) * len(pairs) // micro_batches]
        parts.append(micro[replicas.rank * len(micro) // replicas.world : (replicas.rank + 1) * len(micro) // replicas.world])
    return parts


def _save_checkpoint(out: Path, translator, optimizer, scheduler, phase_no: int, epoch: int, history: History,
                     batch_size: int) -> None:
    """Write the resumable state to a temporary folder and swap it in for ``checkpoint``."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "phase": phase_no,
        "epoch": epoch,
        "history": history.epochs,
        "batch_size": batch_size,
    }
    with building_folder(out / CHECKPOINT_DIR) as tmp:
        save_translator(translator, tmp)
        torch.save(state, tmp / STATE_FILE)


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
