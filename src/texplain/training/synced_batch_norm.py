"""Batch normalisation over the batch of all training processes, on any device.

The translator's MLP normalises with the statistics of its batch. Data
parallel training splits each batch over processes; with per-process
statistics a run would depend on how many processes share the batch.
:class:`SyncedBatchNorm1d` sums the statistics over all processes (a
differentiable all-reduce, so gradients flow through them), which makes a
step on P processes the step of one process on the whole batch.

PyTorch's own ``SyncBatchNorm`` refuses CPU tensors, so gloo (CPU) training
could not use it; this one is small, runs anywhere, and is exact enough:
sums are taken in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SyncedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` over (N, C) inputs whose training statistics are those of every process's rows together.

    Outside training, or without an initialised process group of more than
    one process, it is exactly ``BatchNorm1d``. Parameters and buffers keep
    their names, so checkpoints load into either.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.dim() == 2 and _world() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        wide = x.double()  # (N, C)
        local = torch.cat([wide.sum(0), (wide * wide).sum(0), wide.new_tensor([x.shape[0]])])  # (2C + 1,)
        total = all_reduce(local)
        count = total[-1].detach()
        mean = total[:channels] / count  # (C,)
        var = (total[channels : 2 * channels] / count - mean * mean).clamp_min(0)  # (C,) biased, for normalising
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * count / max(float(count) - 1, 1.0))
        out = (wide - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.double() + self.bias.double()
        return out.to(x.dtype)

    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        """Move the running statistics as ``BatchNorm1d`` does, with the statistics of all processes."""
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(unbiased_var.to(self.running_var.dtype), alpha=momentum)


def sync_batch_norms(module: nn.Module) -> nn.Module:
    """Make every ``BatchNorm1d`` in ``module`` a :class:`SyncedBatchNorm1d`, in place (same parameters, same buffers)."""
    for child in module.modules():
        if type(child) is nn.BatchNorm1d:
            child.__class__ = SyncedBatchNorm1d
    return module


def _world() -> int:
    """Processes in the default process group; 1 when there is none."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
