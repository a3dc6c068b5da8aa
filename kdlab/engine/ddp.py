"""Wrapping a distiller for multi-process training: SyncBatchNorm, DistributedDataParallel, gathers.

* ``train.sync_bn``: every BatchNorm of the student and the connectors (never the teacher) becomes
  a synchronised one: :class:`torch.nn.SyncBatchNorm` on CUDA; on CPU (gloo), where torch's has
  no kernels, :class:`GlooSyncBatchNorm`, the same statistics over the global batch computed with
  differentiable all-reduces.
* The distiller is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`: the gradients
  of its trainable part (``trainable_parameters()``: student + connectors) are averaged; the
  teacher's parameters and buffers are ignored (replicated, never synchronised, run under
  ``no_grad``), and so are modules trained only in an init phase (AB's connectors, FT's
  paraphraser: frozen in the main phase) and the buffers of modules that keep state across the
  batch dimension.
* The init phase of two-stage methods (AB, FT, FSP) runs on the unwrapped distiller and averages
  the gradients of its init parameters with :func:`average_gradients` (one all-reduce per dtype,
  as DDP does for its buckets).
* A module with ``gathers_batch = True`` (CRD's :class:`~kdlab.methods.modules.memory.ContrastMemory`)
  gets ``sync``: a :class:`RankSync` whose ``gather`` all-gathers tensors and ``mean`` averages
  scalars over ranks, so its state is updated from the global batch and stays identical on every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from kdlab.engine import distributed


class RankSync:
    """What a ``gathers_batch`` module calls under DDP (the single-process default is the identity)."""

    @staticmethod
    def gather(t: Tensor) -> Tensor:
        return distributed.all_gather_cat(t)

    @staticmethod
    def mean(t: Tensor) -> Tensor:
        return distributed.all_reduce_sum(t.clone()) / distributed.world_size()


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (any device, any backend).

    Two differentiable all-reduces per call (sum and count, then the squared deviations), so the
    gradients flow to every rank's inputs as in :class:`torch.nn.SyncBatchNorm`.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and distributed.active()):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
        head = dist_fn.all_reduce(torch.cat([x.sum(dims), count]), op=dist.ReduceOp.SUM)
        n = head[-1]
        mean = head[:-1] / n
        var = dist_fn.all_reduce((x - mean.view(shape)).pow(2).sum(dims), op=dist.ReduceOp.SUM) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp(min=1), alpha=m)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _to_sync(module: nn.Module, cls: type[_BatchNorm]) -> nn.Module:
    """``module`` with its BatchNorms (at any depth) replaced by ``cls``, sharing weights, buffers and hooks."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, cls):
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out._forward_hooks, out._forward_pre_hooks = module._forward_hooks, module._forward_pre_hooks  # taps
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_sync(child, cls))
    return out


def convert_sync_bn(distiller: nn.Module, device: torch.device) -> int:
    """Make the BatchNorms of everything but the teacher synchronised, in place; return how many.

    Feature taps (forward hooks) on a converted BatchNorm move with it.
    """
    cls = nn.SyncBatchNorm if device.type == "cuda" else GlooSyncBatchNorm
    teacher = getattr(distiller, "teacher", None)
    count = 0
    for name, child in list(distiller.named_children()):
        if child is teacher:
            continue
        count += sum(isinstance(m, _BatchNorm) for m in child.modules())
        new = _to_sync(child, cls)
        if new is not child:
            setattr(distiller, name, new)
    return count


def attach_sync(distiller: nn.Module) -> list[str]:
    """Give every ``gathers_batch`` module a :class:`RankSync`; return their names (whose buffers DDP ignores)."""
    names = []
    for name, m in distiller.named_modules():
        if getattr(m, "gathers_batch", False):
            m.sync = RankSync()
            names.append(name)
    return names


def wrap(distiller: nn.Module, *, device: torch.device, sync_bn: bool,
         find_unused: bool = False) -> nn.Module:
    """The module the trainer calls: ``distiller`` itself single-process, else its DDP wrapper."""
    if not distributed.active():
        return distiller
    if sync_bn:
        convert_sync_bn(distiller, device)
    gathered = attach_sync(distiller)
    trained = {id(p) for p in distiller.trainable_parameters()}
    ignore = [n for n, p in distiller.named_parameters() if n.startswith("teacher.") or id(p) not in trained]
    ignore += [n for n, _ in distiller.named_buffers()
               if n.startswith("teacher.") or any(n.startswith(g + ".") for g in gathered)]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(distiller, ignore)
    return DistributedDataParallel(distiller, device_ids=None, find_unused_parameters=find_unused)



def average_gradients(params: list[nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over ranks, in place (no-op single-process).

    Every rank must pass the same parameters in the same order. A gradient that is missing on a
    rank counts as zero there; a parameter without a gradient on every rank keeps none (so the
    optimizer skips it, as it would in one process).
    """
    if not distributed.active() or not params:
        return
    world = distributed.world_size()
    device = params[0].device
    has = distributed.all_reduce_sum(torch.tensor([float(p.grad is not None) for p in params], device=device))
    buckets: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
    for p, h in zip(params, has.tolist()):
        if h > 0:
            buckets.setdefault((p.dtype, p.device), []).append(p)
    for group in buckets.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
        distributed.all_reduce_sum(flat).div_(world)
        at = 0
        for p in group:
            part = flat[at:at + p.numel()].view_as(p)
            if p.grad is None:
                p.grad = part.clone()
            else:
                p.grad.copy_(part)
            at += p.numel()
