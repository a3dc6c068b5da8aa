"""Loaders yielding :class:`~kdlab.data.batch.Batch` es, reproducible per (seed, epoch).

``build_loader`` returns a :class:`TensorLoader` for a :class:`TensorImageSet` (the set is moved to
the device once; each batch is gathered, cropped, flipped and normalised there) or a
:class:`FileLoader` for a :class:`FileImageSet` (a torch DataLoader with workers decodes and, for
ImageNet-style sets, crops each image; normalisation is done on the device).

Reproducibility: everything random in an epoch (the shuffle order, crop offsets, flips) is drawn
up front from a dedicated ``torch.Generator`` seeded from ``(seed, epoch)``, never from the global
RNG; the file pipelines' per-image draws (RandomResizedCrop box, flip) come from a generator
seeded with ``sample_seeds(seed, epoch, index)`` (:mod:`kdlab.data.sample_rng`), a function of
the dataset index alone, whichever worker, batch or process serves the sample.
``set_epoch(e, start_batch=k)`` therefore makes the next pass yield exactly the batches k,
k+1, ... an uninterrupted epoch e would have yielded. A pass started without ``set_epoch`` uses
the epoch after the previous pass (the first is epoch 1).

Multi-process runs: ``shard=(rank, world)`` makes every rank build the same global plan and
yield only its contiguous part of each global batch of ``batch_size`` (the first ``m % world``
ranks take one more of a short last batch); batch-level draws (CRD's contrast indices) are made
for the whole global batch and sliced, so the union of the ranks' batches is exactly what one
process would have served. A training loader drops a last global batch smaller than ``world``
(a rank would get no sample); an evaluation loader skips a rank's empty part instead.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from functools import partial

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from kdlab.data.augment import Normalizer, crop_flip
from kdlab.data.bad_files import BadFileLog
from kdlab.data.batch import Batch
from kdlab.data.class_balanced import class_balanced_order
from kdlab.data.contrast import ContrastSampler, batch_generator
from kdlab.data.crop_replay import CropReplay
from kdlab.data.epoch_plan import (
    EpochPlan,
    PlanSampler,
    batches_per_epoch,
    check_shard,
    epoch_generator,
    shard_bounds,
)
from kdlab.data.file_samples import FileBytes, FileSamples, collate_bytes, collate_samples, read_note
from kdlab.data.gpu_decode import check_decode, decode_batch
from kdlab.data.host_memory import keep_freed_host_memory
from kdlab.data.imagesets import FileImageSet, ImageSet, TensorImageSet
from kdlab.data.sample_rng import sample_seeds
from kdlab.errors import KdlabError


def check_int(key: str, value: object, low: int) -> None:
    """One-line :class:`KdlabError` unless ``value`` is an int >= ``low`` (bad config values)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        need = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise KdlabError(f"{key} must be {need}, got {value!r}")


class Loader(ABC):
    """Batches of one :class:`ImageSet`; see the module doc for the epoch rules."""

    def __init__(self, images: ImageSet, *, batch_size: int, shuffle: bool, augment: bool,
                 crop_padding: int, flip: bool, drop_last: bool, with_index: bool, seed: int,
                 device: torch.device, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool, contrast_negatives: int = 0, contrast_mode: str = "exact",
                 per_class: int = 0, shard: tuple[int, int] = (0, 1)) -> None:
        check_int("batch_size", batch_size, 1)
        check_int("data.crop_padding", crop_padding, 0)
        check_int("data.per_class", per_class, 0)
        if per_class and shuffle:
            _, counts = torch.unique(images.targets, return_counts=True)
            if int(counts.clamp(max=per_class).sum()) < batch_size:
                raise KdlabError(f"data.per_class={per_class}: {len(counts)} classes cannot fill a batch of "
                                 f"{batch_size}; lower data.batch_size or raise data.per_class")
        self.shard = check_shard(shard)
        self.per_class = per_class
        self.dataset = images
        self.batch_size = batch_size
        self.shuffle, self.augment = shuffle, augment
        self.crop_padding, self.flip = crop_padding, flip
        self.drop_last, self.with_index = drop_last, with_index
        self.seed, self.device, self.channels_last = seed, device, channels_last
        self.normalize = Normalizer(mean, std, device)
        self.epoch, self.start_batch = 1, 0
        self.replay: CropReplay | None = None  # recorded crops replayed instead of drawn (set_replay)
        # CRD-style methods: per batch, a positive and K other-class negatives (kdlab.data.contrast)
        self.contrast = (ContrastSampler(images.targets, contrast_negatives, contrast_mode)
                         if contrast_negatives else None)

    def _extra(self, epoch: int, b: int, index: Tensor, part: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """What the data layer adds to batch ``b`` of ``epoch`` for the method (``batch.extra``).

        ``index``: the global batch's dataset indices; ``part``: the rank's slice of it (sharded loaders).
        """
        if self.contrast is None:
            return {}
        g = batch_generator(self.seed, epoch, b, index.device)
        drawn = self.contrast.draw(index, g)
        return {"contrast_index": drawn if part is None else drawn[part[0]:part[1]]}

    def __len__(self) -> int:
        return batches_per_epoch(len(self.dataset), self.batch_size, drop_last=self.drop_last,
                                 world=self.shard[1], keep_short=not self.shuffle)

    def _part(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's positions of the global batch ``lo:hi``."""
        return shard_bounds(lo, hi, self.shard) if self.shard[1] > 1 else (lo, hi)

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
            seeds = sample_seeds(self.seed, epoch, order)
        plan = EpochPlan(order, offsets, flips, seeds)
        return self.replay.apply(plan, epoch) if self.replay is not None and self.augment else plan

    def set_replay(self, replay: CropReplay) -> None:
        """Take every epoch's crops from ``replay`` (a teacher cache's recorded views); before the first pass."""
        self.replay = replay

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
        return self.normalize(x, self.channels_last)

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
            rlo, rhi = self._part(lo, hi)
            if rlo == rhi:
                continue
            idx = order[rlo:rhi]
            x = self._finish(self.images.index_select(0, idx), plan, rlo, rhi, crop=True)
            extra = (self._extra(epoch, b, idx) if self.shard[1] == 1
                     else self._extra(epoch, b, order[lo:hi], (rlo - lo, rhi - lo)))
            yield Batch(x, self.targets.index_select(0, idx), idx if self.with_index or self.contrast else None,
                        epoch=epoch, extra=extra)


class FileLoader(Loader):
    """Serves a :class:`FileImageSet` through a torch DataLoader with ``num_workers`` workers.

    ``decode="cpu"``: workers decode (PIL, libjpeg-turbo, reduced-size when the crop allows) and
    crop; ``"gpu"``: workers read bytes, the batch is decoded and cropped on the CUDA device
    (:mod:`kdlab.data.gpu_decode`). Host batches are pinned (``pin_memory``, default on CUDA) and
    the next ``prefetch`` batches are copied to the device ahead of use. Unreadable files follow
    the set's ``bad_log`` policy; :attr:`bad_files` is that log.
    """

    def __init__(self, images: FileImageSet, *, num_workers: int, decode: str = "cpu",
                 pin_memory: bool | None = None, prefetch: int = 1, persistent_workers: bool = True,
                 reuse_host_memory: bool = True, **kw) -> None:
        super().__init__(images, **kw)
        check_int("data.prefetch", prefetch, 0)
        if reuse_host_memory and self.device.type == "cpu":
            keep_freed_host_memory()  # batch-sized float tensors without page faults (kdlab.data.host_memory)
        check_decode(decode, self.device)
        self.files, self.decode, self.prefetch = images, decode, prefetch
        self.sampler = PlanSampler(self.batch_size, len(self), len(images), self.plan(1), self.shard)
        gpu = decode == "gpu" and images.mode == "resized_crop"  # fixed-size sets: small, decoded by workers
        samples = (FileBytes if gpu else FileSamples)(images, train=self.augment, flip=self.flip)
        pin = self.device.type == "cuda" if pin_memory is None else bool(pin_memory)
        cl = self.channels_last and images.mode == "resized_crop"  # fixed sets crop batch-wise, contiguous
        self.loader = DataLoader(
            samples, batch_sampler=self.sampler, num_workers=num_workers,
            pin_memory=pin and not gpu and torch.cuda.is_available(),
            persistent_workers=persistent_workers and num_workers > 0,
            collate_fn=collate_bytes if gpu else partial(collate_samples, channels_last=cl),
            generator=torch.Generator())

    def set_replay(self, replay: CropReplay) -> None:
        super().set_replay(replay)
        self.loader.dataset.replay = replay  # the workers (started by the first pass) read the boxes

    @property
    def bad_files(self) -> BadFileLog:
        """Unreadable files met so far (shared with the dataset's other loaders)."""
        return self.files.bad_log

    def _host_batches(self, start: int) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        """(batch number, uint8 images on the device or host, targets, indices), notes applied."""
        log = self.files.bad_log
        for b, item in enumerate(self.loader, start=start):
            if self.decode == "gpu":
                datas, boxes, flips, target, index, notes = item
                for note in notes:
                    read_note(note, log)
                paths = [self.files.paths[i] for i in index.tolist()]
                x, source = decode_batch(datas, boxes, flips, paths, crop=self.files.crop,
                                         device=self.device, log=log)
                pick = torch.tensor(source)
                yield b, x, target[pick], index[pick]
            else:
                x, target, index, notes = item
                for note in notes:
                    read_note(note, log)
                yield b, x, target, index

    def __iter__(self) -> Iterator[Batch]:
        epoch, start, plan = self._begin()
        self.sampler.start, self.sampler.plan = start, plan
        fixed = self.files.mode == "fixed"
        ahead: deque[Batch] = deque()
        for b, x, target, index in self._host_batches(start):
            lo, hi = self._bounds(b)
            rlo, rhi = self._part(lo, hi)
            x = self._finish(x.to(self.device, non_blocking=True), plan, rlo, rhi, crop=fixed)
            index = index.to(self.device, non_blocking=True)
            if self.shard[1] == 1 or len(index) != rhi - rlo:  # (a skipped bad file: draw for what is left)
                extra = self._extra(epoch, b, index)
            else:
                extra = self._extra(epoch, b, plan.order[lo:hi].to(self.device), (rlo - lo, rhi - lo))
            ahead.append(Batch(x, target.to(self.device, non_blocking=True),
                               index if self.with_index or self.contrast else None, epoch=epoch, extra=extra))
            if len(ahead) > self.prefetch:
                yield ahead.popleft()
        while ahead:
            yield ahead.popleft()


def build_loader(images: ImageSet, *, batch_size: int, train: bool, device: torch.device | str = "cpu",
                 mean: Sequence[float], std: Sequence[float], augment: bool | None = None,
                 crop_padding: int = 4, flip: bool = True, drop_last: bool = False,
                 with_index: bool = False, seed: int = 0, channels_last: bool = False,
                 num_workers: int = 2, contrast_negatives: int = 0, contrast_mode: str = "exact",
                 per_class: int = 0, decode: str = "cpu", pin_memory: bool | None = None, prefetch: int = 1,
                 persistent_workers: bool = True, reuse_host_memory: bool = True,
                 shard: tuple[int, int] = (0, 1)) -> Loader:
    """A loader over ``images`` yielding normalised float32 batches on ``device``.

    ``train`` shuffles (and by default augments: padded random crop + flip for tensor-style sets,
    RandomResizedCrop + flip for ImageNet-style file sets); eval loaders keep the order and only
    normalise. ``crop_padding=0`` disables the crop. ``num_workers`` only matters for file sets.
    ``contrast_negatives=K > 0`` adds ``batch.extra["contrast_index"]`` (B×(K+1): the positive, then
    K samples of other classes; ``contrast_mode`` "exact" or "relax", see :mod:`kdlab.data.contrast`)
    and ``batch.index``. ``per_class=m > 0`` makes training batches class-balanced: m images from
    each of batch_size/m random classes (:mod:`kdlab.data.class_balanced`). ``decode``,
    ``pin_memory`` (None: on CUDA), ``prefetch`` (batches copied to the device ahead) and
    ``persistent_workers`` only matter for file sets (:class:`FileLoader`), as does
    ``reuse_host_memory`` (on a CPU device, :mod:`kdlab.data.host_memory`). ``shard=(rank, world)``:
    this process's part of every global batch of ``batch_size`` (see the module doc).
    """
    check_int("data.batch_size" if train else "data.eval_batch_size", batch_size, 1)
    check_int("data.num_workers", num_workers, 0)
    kw = dict(batch_size=batch_size, shuffle=train, augment=train if augment is None else augment,
              crop_padding=crop_padding, flip=flip, drop_last=drop_last, with_index=with_index,
              seed=seed, device=torch.device(device), mean=mean, std=std, channels_last=channels_last,
              contrast_negatives=contrast_negatives, contrast_mode=contrast_mode, per_class=per_class,
              shard=tuple(shard))
    if isinstance(images, TensorImageSet):
        return TensorLoader(images, **kw)
    if isinstance(images, FileImageSet):
        return FileLoader(images, num_workers=num_workers, decode=decode, pin_memory=pin_memory,
                          prefetch=prefetch, persistent_workers=persistent_workers,
                          reuse_host_memory=reuse_host_memory, **kw)
    raise TypeError(f"no loader for {type(images).__name__}")
