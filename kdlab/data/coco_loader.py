"""A reproducible loader of :class:`~kdlab.data.coco.DetectionBatch` es over a :class:`CocoSet`.

Same contract as the classification loaders (:mod:`kdlab.data.loader`): the shuffle order and one
seed per image (for its flip) are drawn up front from a generator seeded by ``(seed, epoch)``, so
``set_epoch(e, start_batch=k)`` replays batches k, k+1, ... of epoch e exactly; worker processes
decode the images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from kdlab.data.coco import CocoSet, DetectionBatch, collate
from kdlab.data.loader import check_int, epoch_generator


class DetectionLoader:
    """Batches of a :class:`CocoSet`; ``train=True`` shuffles, seeds the flips and drops nothing."""

    def __init__(self, dataset: CocoSet, *, batch_size: int, train: bool, seed: int = 0,
                 num_workers: int = 0, drop_last: bool = False) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        self.dataset = dataset
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.num_workers = num_workers
        self.drop_last = drop_last and train
        self._epoch = 0
        self._start = 0
        self._pending = False

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self._epoch, self._start, self._pending = epoch, start_batch, True

    def keys(self, epoch: int) -> list[list[tuple[int, int] | int]]:
        """The batches of ``epoch`` as dataset keys: ``(index, flip seed)`` in training, indices otherwise."""
        n = len(self.dataset)
        if self.train:
            g = epoch_generator(self.seed, epoch)
            order = torch.randperm(n, generator=g).tolist()
            seeds = torch.randint(0, 2**31 - 1, (n,), generator=g).tolist()
            keys: list = list(zip(order, seeds))
        else:
            keys = list(range(n))
        return [keys[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]

    def __iter__(self) -> Iterator[DetectionBatch]:
        if not self._pending:
            self._epoch, self._start = self._epoch + 1, 0
        self._pending = False
        batches = self.keys(self._epoch)[self._start:]
        if not batches:
            return iter(())
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                            collate_fn=collate, persistent_workers=False)
        return iter(loader)
