"""Contrast indices for CRD-style methods: per anchor, a positive and K negatives of other classes.

The loader asks a :class:`ContrastSampler` for one B×(K+1) index tensor per batch (``batch.extra
["contrast_index"]``): column 0 is the positive — the anchor itself in ``"exact"`` mode, a random
sample of the anchor's class in ``"relax"`` mode — and columns 1..K are dataset indices of samples
**from other classes**, drawn without replacement (RepDistiller ``CIFAR100InstanceSample``). When an
anchor's class has K or fewer other-class samples to draw from (tiny datasets), that row is drawn
with replacement instead, as the reference does.

Everything is vectorised: samples are grouped by class once (``by_class``, ``start``, ``count``);
the other-class pool of class c is ``by_class`` with c's segment cut out, so K distinct positions
in that pool (the top-K of uniform keys, i.e. a random K-subset) map to dataset indices with one
shift. The draws come from a generator seeded by (seed, epoch, batch), so a run resumed at any
batch gets exactly the indices an uninterrupted run would have got.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from kdlab.errors import KdlabError

MODES = ("exact", "relax")


def batch_generator(seed: int, epoch: int, batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` whose stream depends only on (seed, epoch, batch)."""
    words = [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(batch) & 0xFFFFFFFF, 0x43524400]
    state = np.random.SeedSequence(words).generate_state(2)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class ContrastSampler:
    """Draws contrast indices for the samples of one training set (``targets``: N class ids)."""

    def __init__(self, targets: Tensor, negatives: int, mode: str = "exact") -> None:
        if mode not in MODES:
            raise KdlabError(f"contrast mode {mode!r} is not one of {', '.join(MODES)}")
        if negatives <= 0:
            raise KdlabError(f"contrast negatives must be positive, got {negatives}")
        targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1).cpu()
        self.num_data, self.negatives, self.mode = targets.numel(), int(negatives), mode
        self.by_class = torch.argsort(targets, stable=True)  # dataset indices grouped by class
        self.count = torch.bincount(targets)  # samples per class
        self.start = torch.cumsum(self.count, 0) - self.count  # first position of each class
        if int((self.count > 0).sum()) < 2:
            raise KdlabError("contrastive negatives need a training set with at least two classes")
        self.targets = targets
        self.with_replacement = bool((self.num_data - self.count[self.count > 0]).min() < self.negatives)
        self._device: dict[torch.device, tuple[Tensor, ...]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if device not in self._device:
            self._device[device] = tuple(t.to(device) for t in (self.by_class, self.count, self.start, self.targets))
        return self._device[device]

    def draw(self, index: Tensor, generator: torch.Generator) -> Tensor:
        """B×(K+1) dataset indices (int64, on ``index``'s device) for the anchors ``index``."""
        device = index.device
        by_class, count, start, targets = self._on(device)
        k, n = self.negatives, self.num_data
        c = targets[index]
        b = index.numel()
        cnt, first = count[c], start[c]
        pool = n - cnt  # size of each row's other-class pool
        repl = pool < k
        pos = torch.empty(b, k, dtype=torch.int64, device=device)
        exact = ~repl
        if bool(exact.any()):
            rows = exact.nonzero().squeeze(1)
            width = int(pool[rows].max())
            keys = torch.rand(rows.numel(), width, generator=generator, device=device)
            keys.masked_fill_(torch.arange(width, device=device) >= pool[rows].unsqueeze(1), -1.0)
            pos[rows] = keys.topk(k, dim=1, sorted=False).indices
        if bool(repl.any()):
            rows = repl.nonzero().squeeze(1)
            u = torch.rand(rows.numel(), k, generator=generator, device=device)
            pos[rows] = torch.minimum((u * pool[rows].unsqueeze(1)).long(), (pool[rows] - 1).unsqueeze(1))
        pos = pos + cnt.unsqueeze(1) * (pos >= first.unsqueeze(1))  # skip the anchor's class segment
        negatives = by_class[pos]
        if self.mode == "exact":
            positive = index
        else:
            u = torch.rand(b, generator=generator, device=device)
            positive = by_class[first + torch.minimum((u * cnt).long(), cnt - 1)]
        return torch.cat([positive.unsqueeze(1), negatives], dim=1)
