"""Class-balanced training batches: ``per_class`` images from each of ``batch_size / per_class`` classes.

The sampling of Comparative KD's RKD runs (its ``RKDSampler``, after the RKD authors' metric-learning
sampler, methods.md §1.28): every batch independently takes a random ordering of the classes and,
class after class, ``per_class`` different random images of it (all of a smaller class) until the
batch is full. Images may repeat across the batches of an epoch; an epoch still has the loader's
usual number of batches. Drawn from a ``torch.Generator`` so that a loader's epoch plan stays a pure
function of (seed, epoch).
"""

from __future__ import annotations

import torch
from torch import Tensor


def class_balanced_order(targets: Tensor, batch_sizes: list[int], per_class: int,
                         generator: torch.Generator) -> Tensor:
    """Dataset indices for consecutive batches of the given sizes (their concatenation)."""
    targets = targets.cpu()
    classes = torch.unique(targets)
    members = [torch.nonzero(targets == c).flatten() for c in classes]
    order = []
    for size in batch_sizes:
        picked: list[Tensor] = []
        count = 0
        for c in torch.randperm(len(classes), generator=generator).tolist():
            pool = members[c]
            take = min(per_class, len(pool))
            picked.append(pool[torch.randperm(len(pool), generator=generator)[:take]])
            count += take
            if count >= size:
                break
        order.append(torch.cat(picked)[:size])
    return torch.cat(order) if order else torch.zeros(0, dtype=torch.int64)
