"""A reproducible loader of :class:`~kdlab.data.coco.DetectionBatch` es over a :class:`CocoSet`.

Same contract as the classification loaders (:mod:`kdlab.data.loader`): the shuffle order is
drawn up front from a generator seeded by ``(seed, epoch)`` and each image's flip from its own
seed :func:`~kdlab.data.sample_rng.sample_seeds` ``(seed, epoch, index)`` (a function of the
dataset index alone), so ``set_epoch(e, start_batch=k)`` replays batches k, k+1, ... of epoch e
exactly; worker processes decode the images.

Multi-process runs: ``shard=(rank, world)`` makes every rank build the same global plan and serve
only its contiguous part of each global batch of ``batch_size`` (:func:`~kdlab.data.loader.shard_bounds`),
so the ranks' batches together are exactly the single-process batches, and a run resumes exactly
on another number of processes. As in the classification loaders, a training loader drops a last
global batch smaller than ``world`` (a rank would get no image); an evaluation loader skips a
rank's empty part instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from kdlab.data.coco import CocoSet, DetectionBatch, collate
from kdlab.data.epoch_plan import batches_per_epoch, check_shard, epoch_generator, shard_bounds
from kdlab.data.loader import check_int
from kdlab.data.sample_rng import sample_seeds


class DetectionLoader:
    """Batches of a :class:`CocoSet`; ``train=True`` shuffles and seeds the flips; ``shard``: this rank's part."""

    def __init__(self, dataset: CocoSet, *, batch_size: int, train: bool, seed: int = 0,
                 num_workers: int = 0, drop_last: bool = False, shard: tuple[int, int] = (0, 1)) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        shard = check_shard(tuple(shard))
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.num_workers = num_workers
        self.drop_last = drop_last and train
        self.shard = shard
        self._epoch = 0
        self._start = 0
        self._pending = False

    def __len__(self) -> int:
        """Global batches per epoch (the same on every rank)."""
        return batches_per_epoch(len(self.dataset), self.batch_size, drop_last=self.drop_last,
                                 world=self.shard[1], keep_short=not self.train)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        self._epoch, self._start, self._pending = epoch, start_batch, True

    def global_keys(self, epoch: int) -> list[list[tuple[int, int] | int]]:
        """The global batches of ``epoch`` as dataset keys: ``(index, flip seed)`` in training, indices otherwise."""
        n = len(self.dataset)
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, epoch))
            keys: list = list(zip(order.tolist(), sample_seeds(self.seed, epoch, order).tolist()))
        else:
            keys = list(range(n))
        return [keys[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]

    def keys(self, epoch: int, start_batch: int = 0) -> list[list[tuple[int, int] | int]]:
        """This rank's part of each global batch of ``epoch`` from ``start_batch`` on (empty parts left out)."""
        batches = self.global_keys(epoch)[start_batch:]
        if self.shard[1] == 1:
            return batches
        parts = [keys[slice(*shard_bounds(0, len(keys), self.shard))] for keys in batches]
        return [p for p in parts if p]

    def __iter__(self) -> Iterator[DetectionBatch]:
        if not self._pending:
            self._epoch, self._start = self._epoch + 1, 0
        self._pending = False
        batches = self.keys(self._epoch, self._start)
        if not batches:
            return iter(())
        # its own generator: a DataLoader draws its workers' base seed from the global RNG otherwise,
        # and a pass (an evaluation, a resumed epoch) would shift the training's RPN/ROI sampling draws
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                            collate_fn=collate, persistent_workers=False, generator=torch.Generator())
        return iter(loader)
