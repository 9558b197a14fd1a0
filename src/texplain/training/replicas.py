"""The processes that train one translator together: one, or several started by a launcher.

``texplain train`` run as it is trains in this process on ``--device``: in
float32 on a CPU, as it always has. Started by ``accelerate launch`` or
``torchrun`` with more than one process (``WORLD_SIZE`` > 1), or in mixed
precision (bfloat16 by default on a GPU that has it,
:func:`~texplain.generate.device_plan.gpu_dtype`), it trains through Hugging
Face Accelerate: Accelerate sets up the process group (NCCL between GPUs,
gloo between CPUs), puts each process on the GPU of its local rank, wraps the
translator in ``DistributedDataParallel``, and runs autocast and, for fp16,
loss scaling; the launcher's settings (``accelerate launch --mixed_precision
bf16``) apply.

Only the translator is replicated for training: each process holds its own
frozen LM, which is outside every optimizer, and gradients flow through it
to the prefix only. The translator's batch norms are synced over the
processes (:mod:`.synced_batch_norm`), so a step depends on the global batch,
not on how many processes share it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from texplain.errors import TexplainError
from texplain.generate.device_plan import gpu_dtype
from texplain.optional import require
from texplain.training.synced_batch_norm import sync_batch_norms

log = logging.getLogger(__name__)

PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class Replicas:
    """This process's place among the training processes, and how they share work.

    rank, world: this process's number and how many there are. device:
    where this process trains. accelerator: Accelerate's ``Accelerator``;
    None for one process in float32.
    """

    rank: int
    world: int
    device: torch.device
    accelerator: object | None = None

    @classmethod
    def start(cls, device: str = "cpu", mixed_precision: str | None = None) -> Replicas:
        """Join the launched processes, or stand alone; see the module docstring.

        ``mixed_precision``: ``no``, ``bf16`` or ``fp16``; None takes the
        launcher's (``ACCELERATE_MIXED_PRECISION``), else ``bf16`` on a GPU
        that has it, else ``no``. CPUs train in float32 whatever is asked.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        chosen = torch.device(device)
        fallback = "bf16" if gpu_dtype(chosen) == torch.bfloat16 else "no"
        precision = (mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION") or fallback).lower()
        if precision not in PRECISIONS:
            raise TexplainError(f"mixed precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        if chosen.type == "cpu" and precision != "no":
            log.info("mixed precision %s is for GPUs; training on the CPU in float32", precision)
            precision = "no"
        if world == 1 and precision == "no":
            return cls(0, 1, chosen)
        if world > 1 and chosen.index is not None:
            raise TexplainError(f"--device {device}: under a launcher each process takes the GPU of its local rank; "
                                f"pass --device {chosen.type}")
        if chosen.type == "cuda" and chosen.index is not None:
            torch.cuda.set_device(chosen)
        accelerate = require("accelerate", "distributed training", "distributed")
        accelerator = accelerate.Accelerator(cpu=chosen.type == "cpu", mixed_precision=precision)
        if world > 1:
            log.info("training process %d of %d on %s (%s)", accelerator.process_index, accelerator.num_processes,
                     accelerator.device, precision)
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and reports progress."""
        return self.rank == 0

    def wrap(self, translator: nn.Module) -> nn.Module:
        """The module to train: ``translator`` itself alone, else Accelerate's wrapper (DDP, autocast)."""
        if self.accelerator is None:
            return translator
        if self.world > 1:
            sync_batch_norms(translator)
        return self.accelerator.prepare_model(translator)

    def unwrap(self, model: nn.Module) -> None:
        """Take back what :meth:`wrap` put on the translator's forward (Accelerate's autocast), once training is done."""
        if self.accelerator is not None:
            self.accelerator.unwrap_model(model, keep_fp32_wrapper=False)

    def prepare(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer to step: itself alone, else Accelerate's (which scales fp16 losses)."""
        return optimizer if self.accelerator is None else self.accelerator.prepare_optimizer(optimizer)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for a forward pass, when training in it."""
        return contextlib.nullcontext() if self.accelerator is None else self.accelerator.autocast()

    @contextlib.contextmanager
    def accumulating(self, model: nn.Module, more: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: while ``more`` follow, gradients stay in this process."""
        if self.world > 1 and more:
            with self.accelerator.no_sync(model):
                yield
        else:
            yield

    def backward(self, loss: Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip(self, parameters: Iterable[nn.Parameter], max_norm: float) -> None:
        """Clip the gradients' norm (unscaled first under fp16)."""
        if self.accelerator is None:
            torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        else:
            self.accelerator.clip_grad_norm_(parameters, max_norm)

    def total(self, value: float) -> float:
        """``value`` summed over the processes."""
        if self.world == 1:
            return value
        return float(self.accelerator.reduce(torch.tensor([value], dtype=torch.float64, device=self.device), "sum"))

    def least(self, value: int) -> int:
        """The smallest ``value`` over the processes."""
        if self.world == 1:
            return value
        values = self.accelerator.gather(torch.tensor([value], dtype=torch.long, device=self.device))
        return int(values.min())

    def barrier(self) -> None:
        """Wait until every process is here."""
        if self.world > 1:
            self.accelerator.wait_for_everyone()
