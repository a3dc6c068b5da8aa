"""One optimizer step: micro-batches (``train.accumulate``), DDP gradient averaging, the loss scale.

The update always equals the one of the whole global batch (``data.batch_size`` samples, whatever
the number of processes): each rank's share is split into ``accumulate`` micro-batches, and a
micro-batch's mean loss is scaled by ``len(micro) * world / global_n`` before ``backward``, so the
gradient DDP averages over ranks is the gradient of the global batch's mean loss (exactly for
per-sample losses; batch-relational losses see their micro-batch, see docs/distributed.md).
Gradients are all-reduced once per step: earlier micro-batches run under ``no_sync``.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdlab.engine import distributed
from kdlab.errors import KdlabError

if TYPE_CHECKING:
    from kdlab.engine.trainer import Trainer


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` cut into ``parts`` consecutive micro-batches (tensors of batch length are sliced)."""
    if parts == 1:
        return [batch]
    n = len(batch)
    if not isinstance(batch.image, Tensor):
        raise KdlabError("train.accumulate > 1 needs batches of one image tensor (classification)")
    if n < parts:
        return [batch]  # a short last batch: one micro-batch
    cut = lambda t, lo, hi: t[lo:hi] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n else t  # noqa: E731
    bounds = [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]
    return [replace(batch, image=batch.image[lo:hi], target=cut(batch.target, lo, hi),
                    index=cut(batch.index, lo, hi), extra={k: cut(v, lo, hi) for k, v in batch.extra.items()})
            for lo, hi in bounds]


def global_samples(n: int, world: int, device: torch.device) -> Tensor | float:
    """Samples of the global batch whose rank-local part has ``n`` (summed over ranks; ``n`` alone)."""
    if world == 1:
        return float(n)
    return distributed.all_reduce_sum(torch.tensor(float(n), device=device))


def share_of_mean(loss: Tensor, m: int, world: int, total: Tensor | float) -> Tensor:
    """A mean ``loss`` over ``m`` local samples scaled to this rank's share of the global batch's mean loss
    (``m * world / total``), so that DDP's (or the init phase's) gradient averaging gives its gradient."""
    return loss * (m * world / total)


def finite_everywhere(loss: Tensor, world: int) -> bool:
    """Whether the loss is finite on every rank: all ranks then stop together, before any update."""
    bad = (~torch.isfinite(loss.detach())).float().view(1)
    if world > 1:
        bad = distributed.all_reduce_sum(bad)
    return not bool(bad.item())


def train_step(t: Trainer, batch: Any, epoch: int) -> None:
    """Forward, backward (per micro-batch), clip, step the optimizer and the per-step schedule."""
    batch = t.policy.prepare_batch(batch)
    batch.epoch = epoch
    batch.step = t.global_step
    world = distributed.world_size()
    micro = split_batch(batch, t.cfg.train.accumulate)
    n = len(batch)
    total = global_samples(n, world, t.policy.device)  # a short last batch is split unevenly
    lr = t.optimizer.param_groups[0]["lr"]
    t.optimizer.zero_grad(set_to_none=True)
    for i, mb in enumerate(micro):
        last = i == len(micro) - 1
        quiet = t.model.no_sync() if not last and hasattr(t.model, "no_sync") else contextlib.nullcontext()
        with quiet:
            with t.policy.autocast():
                logits, terms = t.model(mb)
            if not terms:
                raise KdlabError(f"{type(t.distiller).__name__} returned no loss terms")
            loss = sum(terms.values())
            if loss.dim() != 0:
                raise KdlabError(f"loss terms must be scalars; got shape {tuple(loss.shape)}")
            if not finite_everywhere(loss, world):
                raise t._diverged(epoch, terms, "loss")
            scaled = loss if (world == 1 and len(micro) == 1) else share_of_mean(loss, len(mb), world, total)
            scaled.backward()
        t.meter.update(loss, terms, logits, mb.target, lr, len(mb))
    clip = t.cfg.optim.grad_clip
    if clip is not None and clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(t.params, clip)
        if not bool(torch.isfinite(norm)):
            raise t._diverged(epoch, terms, f"gradient norm ({norm.item()})")
    t.optimizer.step()
    t.scheduler.step()
    t.meter.steps += 1 - len(micro)  # the meter counts optimizer steps
    t.images_seen += n * world
    t.global_step += 1
    t.batch_in_epoch += 1
