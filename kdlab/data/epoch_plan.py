"""What is random in one epoch, and how each global batch is cut into the ranks' parts.

:class:`EpochPlan` holds an epoch's shuffle order and augmentation draws (a pure function of
``(seed, epoch)`` through :func:`epoch_generator`); :func:`shard_bounds` gives a rank its
contiguous part of a global batch (:func:`check_shard` checks a ``(rank, world)`` pair and
:func:`batches_per_epoch` counts the global batches, for every loader); :class:`PlanSampler` is
the batch sampler a file loader's DataLoader runs on, serving the keys ``(index, seed[, view])`` of
the plan it is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kdlab.errors import KdlabError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, epoch)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def check_shard(shard: object) -> tuple[int, int]:
    """``shard`` when it is a tuple ``(rank, world)`` with ``0 <= rank < world``, else one error line."""
    if not (isinstance(shard, tuple) and len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise KdlabError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    return shard


def batches_per_epoch(n: int, batch_size: int, *, drop_last: bool, world: int, keep_short: bool) -> int:
    """Global batches of ``batch_size`` in an epoch of ``n`` samples.

    ``drop_last`` drops a short last batch; otherwise it is kept when every one of the ``world``
    ranks gets a sample of it, or always with ``keep_short`` (evaluation: a rank skips an empty part).
    """
    if drop_last:
        return n // batch_size
    full, rest = divmod(n, batch_size)
    return full + (1 if rest and (rest >= world or keep_short) else 0)


def shard_bounds(lo: int, hi: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Rank ``shard[0]``'s contiguous part of positions ``lo:hi`` split over ``shard[1]`` ranks.

    The first ``(hi - lo) % world`` ranks get one more position than the others.
    """
    r, w = shard
    q, rem = divmod(hi - lo, w)
    start = lo + r * q + min(r, rem)
    return start, start + q + (1 if r < rem else 0)


@dataclass
class EpochPlan:
    """What is random in one epoch, indexed by position in the epoch's sample order."""

    order: Tensor  # (N,) dataset indices in the order they are served
    offsets: Tensor | None  # (N, 2) crop offsets in the padded image
    flips: Tensor | None  # (N,) bool
    seeds: Tensor | None  # (N,) per-image seeds (file pipelines): sample_seeds(seed, epoch, order)
    view: int | None = None  # a replayed teacher-cache view (kdlab.data.crop_replay): the crops come from it


class PlanSampler:
    """Batch sampler serving the keys of the pass the loader set in ``start`` / ``plan``.

    It holds no reference back to the loader: a cycle would leave the DataLoader's workers to the
    garbage collector, whose teardown order makes their shutdown wait for a 10 s timeout.
    """

    def __init__(self, batch_size: int, num_batches: int, n: int, plan: EpochPlan,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.batch_size, self.num_batches, self.n = batch_size, num_batches, n
        self.start, self.plan, self.shard = 0, plan, shard

    def _part(self, b: int) -> tuple[int, int]:
        lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
        return shard_bounds(lo, hi, self.shard) if self.shard[1] > 1 else (lo, hi)

    def __len__(self) -> int:
        return sum(1 for b in range(self.start, self.num_batches) if self._part(b)[1] > self._part(b)[0])

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        order = self.plan.order.tolist()
        seeds = self.plan.seeds.tolist() if self.plan.seeds is not None else [0] * len(order)
        view = () if self.plan.view is None else (self.plan.view,)  # replayed: workers read the recorded crop
        for b in range(self.start, self.num_batches):
            lo, hi = self._part(b)
            if hi > lo:  # only a rank's part of a short last batch can be empty
                yield [(i, s, *view) for i, s in zip(order[lo:hi], seeds[lo:hi])]
