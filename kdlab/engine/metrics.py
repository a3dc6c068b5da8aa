"""Classification metrics: top-k counts and a full evaluation pass over a loader.

Accuracies are percentages (0-100), as the papers report them. Top-5 becomes top-min(5, C) for
datasets with fewer than 5 classes.

Under DDP a loader built with ``shard=(rank, world)`` gives each rank its part of every batch;
:func:`evaluate` then sums the counts over ranks, so every rank returns the whole split's metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.data.batch import Batch
from kdlab.engine import distributed
from kdlab.engine.device import DevicePolicy
from kdlab.errors import KdlabError


def topk_correct(logits: Tensor, target: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """Number of samples whose target is among the top-k logits, for each k (k capped at C).

    Returns a ``long`` tensor of shape ``(len(ks),)`` on the logits' device (no host sync).
    """
    num_classes = logits.shape[-1]
    ks_eff = [min(k, num_classes) for k in ks]
    top = logits.topk(max(ks_eff), dim=-1).indices  # B x kmax
    hit = top.eq(target.view(-1, 1))
    return torch.stack([hit[:, :k].any(dim=1).sum() for k in ks_eff])


def as_batch(item) -> Batch:
    """A :class:`Batch`, from a Batch or from an ``(images, targets[, index])`` tuple."""
    if isinstance(item, Batch):
        return item
    if isinstance(item, list | tuple) and len(item) in (2, 3):
        return Batch(item[0], item[1], item[2] if len(item) == 3 else None)
    raise KdlabError(f"a loader must yield kdlab Batch objects or (images, targets) pairs, got {type(item)}")


def evaluate(model: nn.Module, loader: Iterable, *, policy: DevicePolicy | None = None,
             device: torch.device | str | None = None) -> dict[str, float]:
    """Evaluate ``model`` on ``loader``: ``{"top1", "top5", "loss", "n"}`` (loss = mean CE).

    Runs in eval mode under ``torch.inference_mode`` and the policy's autocast; the model's
    train/eval mode is restored afterwards. Without a policy, ``device`` (or the model's) is used
    in fp32.
    """
    if policy is None:
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        policy = DevicePolicy(torch.device(device))
    was_training = model.training
    model.eval()
    n = 0
    loss_sum = torch.zeros((), dtype=torch.float64, device=policy.device)
    correct = torch.zeros(2, dtype=torch.long, device=policy.device)
    try:
        with torch.inference_mode():
            for item in loader:
                batch = as_batch(item)
                images = policy.prepare_images(batch.image)
                target = batch.target.to(policy.device, non_blocking=True)
                with policy.autocast():
                    logits = model(images)
                logits = logits.float()
                loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
                correct += topk_correct(logits, target, (1, 5))
                n += target.shape[0]
    finally:
        model.train(was_training)
    shard = getattr(loader, "shard", (0, 1))
    if shard[1] > 1:  # each rank scored its part: sum the counts over ranks
        flat = distributed.all_reduce_sum(torch.cat([torch.tensor([float(n)], dtype=torch.float64,
                                                                  device=policy.device),
                                                     loss_sum.view(1), correct.double()]))
        n, loss_sum, correct = int(flat[0]), flat[1], flat[2:].long()
    if n == 0:
        raise KdlabError("the evaluation loader yielded no samples")
    top1, top5 = correct.tolist()
    return {"top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss_sum.item() / n, "n": n}
