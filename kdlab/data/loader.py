"""Loaders yielding :class:`~kdlab.data.batch.Batch` es, reproducible per (seed, epoch).

``build_loader`` returns a :class:`TensorLoader` for a :class:`TensorImageSet` (the set is moved to
the device once; each batch is gathered, cropped, flipped and normalised there) or a
:class:`FileLoader` for a :class:`FileImageSet` (a torch DataLoader with workers decodes and, for
ImageNet-style sets, crops each image; normalisation is done on the device).

Reproducibility: everything random in an epoch (the shuffle order, crop offsets, flips, per-image
seeds) is drawn up front from a dedicated ``torch.Generator`` seeded from ``(seed, epoch)``, never
from the global RNG. ``set_epoch(e, start_batch=k)`` therefore makes the next pass yield exactly
the batches k, k+1, ... an uninterrupted epoch e would have yielded. A pass started without
``set_epoch`` uses the epoch after the previous pass (the first is epoch 1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdlab.data.augment import Normalizer, crop_flip
from kdlab.data.batch import Batch
from kdlab.data.class_balanced import class_balanced_order
from kdlab.data.contrast import ContrastSampler, batch_generator
from kdlab.data.imagesets import FileImageSet, ImageSet, TensorImageSet
from kdlab.data.transforms import file_transform
from kdlab.errors import KdlabError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, epoch)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def check_int(key: str, value: object, low: int) -> None:
    """One-line :class:`KdlabError` unless ``value`` is an int >= ``low`` (bad config values)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        need = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise KdlabError(f"{key} must be {need}, got {value!r}")


@dataclass
class EpochPlan:
    """What is random in one epoch, indexed by position in the epoch's sample order."""

    order: Tensor  # (N,) dataset indices in the order they are served
    offsets: Tensor | None  # (N, 2) crop offsets in the padded image
    flips: Tensor | None  # (N,) bool
    seeds: Tensor | None  # (N,) per-image seeds (file pipelines)


class Loader(ABC):
    """Batches of one :class:`ImageSet`; see the module doc for the epoch rules."""

    def __init__(self, images: ImageSet, *, batch_size: int, shuffle: bool, augment: bool,
                 crop_padding: int, flip: bool, drop_last: bool, with_index: bool, seed: int,
                 device: torch.device, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool, contrast_negatives: int = 0, contrast_mode: str = "exact",
                 per_class: int = 0) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("data.crop_padding", crop_padding, 0)
        check_int("data.per_class", per_class, 0)
        if per_class and shuffle:
            _, counts = torch.unique(images.targets, return_counts=True)
            if int(counts.clamp(max=per_class).sum()) < batch_size:
                raise KdlabError(f"data.per_class={per_class}: {len(counts)} classes cannot fill a batch of "
                                 f"{batch_size}; lower data.batch_size or raise data.per_class")
        self.per_class = per_class
        self.dataset = images
        self.batch_size = batch_size
        self.shuffle, self.augment = shuffle, augment
        self.crop_padding, self.flip = crop_padding, flip
        self.drop_last, self.with_index = drop_last, with_index
        self.seed, self.device, self.channels_last = seed, device, channels_last
        self.normalize = Normalizer(mean, std, device)
        self.epoch, self.start_batch = 1, 0
        # CRD-style methods: per batch, a positive and K other-class negatives (kdlab.data.contrast)
        self.contrast = (ContrastSampler(images.targets, contrast_negatives, contrast_mode)
                         if contrast_negatives else None)

    def _extra(self, epoch: int, b: int, index: Tensor) -> dict[str, Tensor]:
        """What the data layer adds to batch ``b`` of ``epoch`` for the method (``batch.extra``)."""
        if self.contrast is None:
            return {}
        g = batch_generator(self.seed, epoch, b, index.device)
        return {"contrast_index": self.contrast.draw(index, g)}

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch ``epoch``, starting at its batch ``start_batch``."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        self.epoch, self.start_batch = epoch, start_batch

    def plan(self, epoch: int) -> EpochPlan:
        """The shuffle order and augmentation draws of ``epoch`` (a pure function of seed, epoch)."""
        n = len(self.dataset)
        g = epoch_generator(self.seed, epoch)
        if self.shuffle and self.per_class:
            sizes = [hi - lo for lo, hi in map(self._bounds, range(math.ceil(n / self.batch_size)))]
            order = class_balanced_order(self.dataset.targets, sizes, self.per_class, g)
        else:
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        offsets = flips = seeds = None
        if self.augment:
            offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g)
            flips = torch.rand(n, generator=g) < 0.5
            seeds = torch.randint(0, 2**62, (n,), generator=g)
        return EpochPlan(order, offsets, flips, seeds)

    def _begin(self) -> tuple[int, int, EpochPlan]:
        """(epoch, first batch, plan with its crop draws already on the device) of the next pass."""
        epoch, start = self.epoch, self.start_batch
        self.epoch, self.start_batch = epoch + 1, 0
        plan = self.plan(epoch)
        if plan.offsets is not None:
            plan.offsets, plan.flips = plan.offsets.to(self.device), plan.flips.to(self.device)
        return epoch, start, plan

    def _bounds(self, b: int) -> tuple[int, int]:
        return b * self.batch_size, min((b + 1) * self.batch_size, len(self.dataset))

    def _finish(self, x: Tensor, plan: EpochPlan, lo: int, hi: int, crop: bool) -> Tensor:
        """Batched crop / flip (tensor-style sets) and normalisation of a uint8 batch on the device."""
        if crop and plan.offsets is not None and (self.crop_padding or self.flip):
            flips = plan.flips[lo:hi] if self.flip else torch.zeros_like(plan.flips[lo:hi])
            x = crop_flip(x, plan.offsets[lo:hi], flips, self.crop_padding)
        x = self.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @abstractmethod
    def __iter__(self) -> Iterator[Batch]: ...


class TensorLoader(Loader):
    """Serves a :class:`TensorImageSet` held on the device; augments whole batches there."""

    def __init__(self, images: TensorImageSet, **kw) -> None:
        super().__init__(images, **kw)
        self.images, self.targets = images.on(self.device)

    def __iter__(self) -> Iterator[Batch]:
        epoch, start, plan = self._begin()
        order = plan.order.to(self.device)
        for b in range(start, len(self)):
            lo, hi = self._bounds(b)
            idx = order[lo:hi]
            x = self._finish(self.images.index_select(0, idx), plan, lo, hi, crop=True)
            yield Batch(x, self.targets.index_select(0, idx), idx if self.with_index or self.contrast else None,
                        epoch=epoch, extra=self._extra(epoch, b, idx))


class _FileDataset(Dataset):
    """Decodes one file per key ``(index, seed)``; returns (uint8 image, target, index)."""

    def __init__(self, files: FileImageSet, train: bool, flip: bool) -> None:
        self.files, self.train, self.flip = files, train, flip

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, int]:
        i, seed = key
        with Image.open(self.files.paths[i]) as im:
            img = im.convert("RGB")
        x = file_transform(self.files, img, train=self.train, flip=self.flip, seed=seed)
        return x, int(self.files.targets[i]), i


class _PlanSampler:
    """Batch sampler serving the keys of the pass the loader set in ``start`` / ``plan``.

    It holds no reference back to the loader: a cycle would leave the DataLoader's workers to the
    garbage collector, whose teardown order makes their shutdown wait for a 10 s timeout.
    """

    def __init__(self, batch_size: int, num_batches: int, n: int, plan: EpochPlan) -> None:
        self.batch_size, self.num_batches, self.n = batch_size, num_batches, n
        self.start, self.plan = 0, plan

    def __len__(self) -> int:
        return self.num_batches - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.plan.order.tolist()
        seeds = self.plan.seeds.tolist() if self.plan.seeds is not None else [0] * len(order)
        for b in range(self.start, self.num_batches):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
            yield list(zip(order[lo:hi], seeds[lo:hi]))


class FileLoader(Loader):
    """Serves a :class:`FileImageSet` through a torch DataLoader with ``num_workers`` workers."""

    def __init__(self, images: FileImageSet, *, num_workers: int, **kw) -> None:
        super().__init__(images, **kw)
        self.files = images
        self.sampler = _PlanSampler(self.batch_size, len(self), len(images), self.plan(1))
        self.loader = DataLoader(
            _FileDataset(images, train=self.augment, flip=self.flip), batch_sampler=self.sampler,
            num_workers=num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0, generator=torch.Generator())

    def __iter__(self) -> Iterator[Batch]:
        epoch, start, plan = self._begin()
        self.sampler.start, self.sampler.plan = start, plan
        fixed = self.files.mode == "fixed"
        for b, (x, target, index) in enumerate(self.loader, start=start):
            lo, hi = self._bounds(b)
            x = self._finish(x.to(self.device, non_blocking=True), plan, lo, hi, crop=fixed)
            index = index.to(self.device, non_blocking=True)
            yield Batch(x, target.to(self.device, non_blocking=True),
                        index if self.with_index or self.contrast else None, epoch=epoch,
                        extra=self._extra(epoch, b, index))


def build_loader(images: ImageSet, *, batch_size: int, train: bool, device: torch.device | str = "cpu",
                 mean: Sequence[float], std: Sequence[float], augment: bool | None = None,
                 crop_padding: int = 4, flip: bool = True, drop_last: bool = False,
                 with_index: bool = False, seed: int = 0, channels_last: bool = False,
                 num_workers: int = 2, contrast_negatives: int = 0, contrast_mode: str = "exact",
                 per_class: int = 0) -> Loader:
    """A loader over ``images`` yielding normalised float32 batches on ``device``.

    ``train`` shuffles (and by default augments: padded random crop + flip for tensor-style sets,
    RandomResizedCrop + flip for ImageNet-style file sets); eval loaders keep the order and only
    normalise. ``crop_padding=0`` disables the crop. ``num_workers`` only matters for file sets.
    ``contrast_negatives=K > 0`` adds ``batch.extra["contrast_index"]`` (B×(K+1): the positive, then
    K samples of other classes; ``contrast_mode`` "exact" or "relax", see :mod:`kdlab.data.contrast`)
    and ``batch.index``. ``per_class=m > 0`` makes training batches class-balanced: m images from
    each of batch_size/m random classes (:mod:`kdlab.data.class_balanced`).
    """
    check_int("data.batch_size" if train else "data.eval_batch_size", batch_size, 1)
    check_int("data.num_workers", num_workers, 0)
    kw = dict(batch_size=batch_size, shuffle=train, augment=train if augment is None else augment,
              crop_padding=crop_padding, flip=flip, drop_last=drop_last, with_index=with_index,
              seed=seed, device=torch.device(device), mean=mean, std=std, channels_last=channels_last,
              contrast_negatives=contrast_negatives, contrast_mode=contrast_mode, per_class=per_class)
    if isinstance(images, TensorImageSet):
        return TensorLoader(images, **kw)
    if isinstance(images, FileImageSet):
        return FileLoader(images, num_workers=num_workers, **kw)
    raise TypeError(f"no loader for {type(images).__name__}")
