"""Tuple sampling for comparative methods (Comparative KD's ``CKDSample``) and its loader.

A *tuple* is ``P`` "positive" plus ``Q`` "negative" training-image indices (``P + Q = size``,
``Q = size // 2``, so size 2 is 1-vs-1 and size 3 is 2-vs-1). :func:`sample_tuples` precomputes up
to ``max_tuples`` distinct tuples, seeded; the positives and the negatives of a tuple are each
sorted, so two tuples are the same when they have the same positive set and the same negative set.
As in CompKD: when there are at least 5 × ``max_tuples`` possible tuples they are drawn at random
and duplicates dropped, otherwise all of them are enumerated and, if too many, ``max_tuples`` are
chosen at random.

:class:`TupleLoader` serves ``batch_size`` tuples per step as one flattened batch of
``batch_size × size`` images, tuple-major (rows ``t·size … t·size+P−1`` are tuple t's positives,
the next ``Q`` rows its negatives), each image with a fresh padded-crop + flip. ``batch.index``
holds the images' dataset indices (so cached teacher logits can be attached),
``batch.extra["tuples"]`` the ``batch_size × size`` index table and ``batch.extra["tuple_split"]``
``[P, Q]``.

Epochs: the tuples are served as an endless stream of passes, each pass a fresh permutation of the
whole pool; an epoch is ``steps_per_epoch`` consecutive batches of that stream (default
``⌈len(images) / batch_size⌉``, CompKD's "simulated epoch" of ⌈0.8N/64⌉ steps between two
validations). Everything random in a batch is a function of (seed, epoch, batch), so
``set_epoch(e, start_batch)`` resumes exactly. Unlike CompKD's DataLoader (whose last batch of a
pass over the pool is short), every batch holds exactly ``batch_size`` tuples: a batch that
crosses the end of a pass takes the first tuples of the next one.

Multi-process runs: with ``shard=(rank, world)`` every rank draws the same global batch of
``batch_size`` tuples (and the augmentation of all its images) and serves only its contiguous part
of the tuples (:func:`~kdlab.data.loader.shard_bounds`, the image loaders' rule), each tuple whole,
so the ranks' batches concatenated in rank order are exactly the single-process batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from kdlab.data.augment import Normalizer, crop_flip
from kdlab.data.batch import Batch
from kdlab.data.epoch_plan import check_shard, shard_bounds
from kdlab.data.imagesets import ImageSet, TensorImageSet
from kdlab.data.loader import check_int
from kdlab.errors import KdlabError

_PASS_TAG = 0x7475706C  # keeps tuple draws apart from the image loaders' (seed, epoch) streams
_AUG_TAG = 0x61756774


def tuple_split(size: int) -> tuple[int, int]:
    """``(P, Q)`` for a tuple of ``size`` images: ``Q = size // 2`` negatives, the rest positives."""
    if size not in (2, 3):
        raise KdlabError(f"pos_and_neg must be 2 or 3, got {size}")
    neg = size // 2
    return size - neg, neg


def _canonical(rows: np.ndarray, pos: int) -> np.ndarray:
    return np.concatenate([np.sort(rows[:, :pos], axis=1), np.sort(rows[:, pos:], axis=1)], axis=1)


def sample_tuples(n: int, pos: int, neg: int, max_tuples: int = 100_000, seed: int = 0) -> np.ndarray:
    """Up to ``max_tuples`` distinct tuples over ``n`` images: an int64 array (T, pos + neg).

    Columns ``:pos`` are the positives, ``pos:`` the negatives, each sorted; every row holds
    ``pos + neg`` different images. A pure function of its arguments.
    """
    k = pos + neg
    if pos < 1 or neg < 1:
        raise KdlabError(f"a tuple needs at least one positive and one negative, got {pos} and {neg}")
    if n < k:
        raise KdlabError(f"cannot draw tuples of {k} different images from {n} images")
    if max_tuples <= 0:
        raise KdlabError(f"max_rel_samples must be positive, got {max_tuples}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _PASS_TAG])
    total = math.comb(n, pos) * math.comb(n - pos, neg)
    if total >= 5 * max_tuples:  # sparse: random draws, duplicates dropped (first occurrence kept)
        found = np.empty((0, k), dtype=np.int64)
        while len(found) < max_tuples:
            cand = rng.integers(0, n, size=(2 * max_tuples, k), dtype=np.int64)
            srt = np.sort(cand, axis=1)
            cand = cand[(np.diff(srt, axis=1) != 0).all(axis=1)]  # k different images
            found = np.concatenate([found, _canonical(cand, pos)])
            _, first = np.unique(found, axis=0, return_index=True)
            found = found[np.sort(first)]
        return found[:max_tuples]
    rows = []  # dense: every (set of k images, choice of the positives among them)
    for combo in itertools.combinations(range(n), k):
        for chosen in itertools.combinations(range(k), pos):
            rest = [combo[i] for i in range(k) if i not in chosen]
            rows.append([combo[i] for i in chosen] + rest)
    table = np.asarray(rows, dtype=np.int64).reshape(-1, k)
    if len(table) > max_tuples:
        table = table[np.sort(rng.choice(len(table), size=max_tuples, replace=False))]
    return table


def _generator(*words: int) -> torch.Generator:
    state = np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class TupleLoader:
    """Batches of ``batch_size`` tuples of a :class:`TensorImageSet` (see the module doc)."""

    def __init__(self, images: ImageSet, *, pos_and_neg: int = 3, max_tuples: int = 100_000,
                 batch_size: int, seed: int = 0, device: torch.device | str = "cpu",
                 mean: Sequence[float], std: Sequence[float], crop_padding: int = 4, flip: bool = True,
                 augment: bool = True, steps_per_epoch: int | None = None, channels_last: bool = False,
                 shard: tuple[int, int] = (0, 1)) -> None:
        if not isinstance(images, TensorImageSet):
            raise KdlabError("tuple loaders need the training images in memory; set data.in_memory: true "
                             "(few-sample subsets are small)")
        check_int("data.batch_size", batch_size, 1)
        check_int("data.crop_padding", crop_padding, 0)
        check_shard(shard)
        if batch_size < shard[1]:
            raise KdlabError(f"data.batch_size={batch_size} tuples cannot be shared among {shard[1]} processes; "
                             f"use at least {shard[1]}")
        self.shard = shard
        self.dataset = images
        self.pos, self.neg = tuple_split(pos_and_neg)
        self.size = pos_and_neg
        self.tuples = torch.from_numpy(sample_tuples(len(images), self.pos, self.neg, max_tuples, seed))
        self.batch_size, self.seed = batch_size, seed
        self.device = torch.device(device)
        self.images, self.targets = images.on(self.device)
        self.normalize = Normalizer(mean, std, self.device)
        self.crop_padding, self.flip, self.augment = crop_padding, flip, augment
        self.channels_last = channels_last
        self.steps_per_epoch = steps_per_epoch or math.ceil(len(images) / batch_size)
        self.with_index = True
        self.epoch, self.start_batch = 1, 0
        self._perm: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        self.epoch, self.start_batch = epoch, start_batch

    def pass_order(self, p: int) -> Tensor:
        """The permutation of the tuple pool used by pass ``p`` (0-indexed) of the stream."""
        if self._perm is None or self._perm[0] != p:
            self._perm = (p, torch.randperm(len(self.tuples), generator=_generator(self.seed, _PASS_TAG, p)))
        return self._perm[1]

    def batch_tuples(self, epoch: int, b: int) -> Tensor:
        """The (batch_size, P+Q) tuple table of batch ``b`` of ``epoch`` (1-indexed epochs)."""
        t = len(self.tuples)
        first = ((epoch - 1) * self.steps_per_epoch + b) * self.batch_size
        picks = []
        while len(picks) < self.batch_size:
            p, at = divmod(first + len(picks), t)
            take = min(self.batch_size - len(picks), t - at)
            picks.extend(self.pass_order(p)[at:at + take].tolist())
        return self.tuples[picks]

    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self.epoch, self.start_batch
        self.epoch, self.start_batch = epoch + 1, 0
        lo, hi = shard_bounds(0, self.batch_size, self.shard)  # this rank's tuples of every global batch
        rows = slice(lo * self.size, hi * self.size)  # and their images
        for b in range(start, len(self)):
            table = self.batch_tuples(epoch, b)[lo:hi]
            idx = table.reshape(-1).to(self.device)
            x = self.images.index_select(0, idx)
            if self.augment and (self.crop_padding or self.flip):
                g = _generator(self.seed, _AUG_TAG, epoch, b)  # drawn for the global batch, then sliced
                every = self.batch_size * self.size
                offsets = torch.randint(0, 2 * self.crop_padding + 1, (every, 2), generator=g)[rows]
                flips = (torch.rand(every, generator=g) < 0.5)[rows]
                if not self.flip:
                    flips = torch.zeros_like(flips)
                x = crop_flip(x, offsets.to(self.device), flips.to(self.device), self.crop_padding)
            x = self.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x, self.targets.index_select(0, idx), idx, epoch=epoch,
                        extra={"tuples": table.to(self.device),
                               "tuple_split": torch.tensor([self.pos, self.neg], device=self.device)})


def build_tuple_loader(images: ImageSet, **kw) -> TupleLoader:
    """The ``"tuples"`` training loader (see :class:`TupleLoader` for the keywords)."""
    return TupleLoader(images, **kw)


__all__ = ["TupleLoader", "build_tuple_loader", "sample_tuples", "tuple_split"]
