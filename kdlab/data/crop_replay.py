"""Recorded crops: each training sample's augmentation parameters, per view, replayed by the loaders.

A replay teacher cache (:mod:`kdlab.data.replay_cache`) stores, for every view ``v`` of ``V`` and
every dataset index ``i``, the crop the teacher saw, so that the student can be shown exactly that
crop later. The parameters of view ``v`` are the draws the training loader itself makes in epoch
``v + 1`` (:func:`tensor_view_crops` reads them from the loader's :class:`~kdlab.data.loader.EpochPlan`,
:func:`resized_view_crops` repeats the file workers' per-sample draws), so with ``V >= epochs`` a
replayed run shows the student the very pixels an online run would.

* tensor sets and ``fixed``-mode file sets: ``boxes`` is (N, 2) int16, the (top, left) offsets of
  the padded-crop window; ``flips`` (N,) bool, the flip actually applied;
* ``resized_crop`` file sets: ``boxes`` is (N, 4), the RandomResizedCrop window (top, left, h, w)
  in original-image pixels (int16, int32 when an image is 32768 px or more); an unreadable file
  has the row (0, 0, 0, 0).

:class:`CropReplay` holds the V views; a loader with one (``Loader.set_replay``) takes epoch
``e``'s crops from view ``(e - 1) mod V`` instead of drawing them; its shuffle order stays epoch
``e``'s own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdlab.data.decode import header_size
from kdlab.data.imagesets import FileImageSet, ImageSet
from kdlab.data.sample_rng import sample_seeds
from kdlab.data.transforms import resized_crop_draw

INT16_MAX = 32767


@dataclass
class ViewCrops:
    """One view's crop parameters; row i belongs to dataset index i."""

    boxes: Tensor  # (N, 2) pad-crop offsets or (N, 4) (top, left, h, w) boxes
    flips: Tensor  # (N,) bool

    def __len__(self) -> int:
        return int(self.flips.shape[0])

    def rows(self, index: Tensor) -> ViewCrops:
        return ViewCrops(self.boxes.index_select(0, index), self.flips.index_select(0, index))


class CropReplay:
    """The crops of ``V`` views; epoch ``e`` replays view ``(e - 1) mod V``."""

    def __init__(self, views: list[ViewCrops]) -> None:
        if not views:
            raise ValueError("a crop replay needs at least one view")
        self.views = views

    def view_of(self, epoch: int) -> int:
        return (int(epoch) - 1) % len(self.views)

    def resized_box(self, view: int, index: int) -> tuple[int, int, int, int, bool] | None:
        """(top, left, h, w, flip) of sample ``index`` in ``view``; None for an unreadable file's empty row."""
        crops = self.views[view]
        top, left, h, w = (int(v) for v in crops.boxes[index].tolist())
        return (top, left, h, w, bool(crops.flips[index])) if h > 0 else None

    def apply(self, plan, epoch: int):
        """``plan`` (an EpochPlan) with its crops taken from the epoch's view (its order kept)."""
        v = self.view_of(epoch)
        crops = self.views[v]
        if crops.boxes.shape[1] == 4:  # resized crops: the workers read them by index (the plan carries v)
            return dataclasses.replace(plan, view=v)
        order = plan.order.cpu()
        return dataclasses.replace(plan, offsets=crops.boxes.index_select(0, order).long(),
                                   flips=crops.flips.index_select(0, order), view=v)


def tensor_view_crops(plan, n: int, flip: bool) -> ViewCrops:
    """The pad-crop offsets and applied flips of a training plan (positions) as rows by dataset index.

    A plan whose order repeats an index (class-balanced batches) keeps one of its draws.
    """
    offsets = torch.zeros(n, 2, dtype=torch.int16)
    flips = torch.zeros(n, dtype=torch.bool)
    order = plan.order.cpu()
    offsets[order] = plan.offsets.cpu().to(torch.int16)
    flips[order] = plan.flips.cpu() & flip
    return ViewCrops(offsets, flips)


class _HeaderSizes(Dataset):
    """Index -> (height, width) from the image header; (0, 0) for an unreadable file."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        try:
            h, w = header_size(self.paths[i])
        except Exception:  # the loader meets the file itself and applies data.on_bad_file
            h = w = 0
        return torch.tensor([h, w], dtype=torch.int32)


def image_sizes(files: FileImageSet, index: Tensor, num_workers: int = 0) -> Tensor:
    """(len(index), 2) int32 (height, width) of the files at ``index``, read from their headers."""
    paths = tuple(files.paths[i] for i in index.tolist())
    loader = DataLoader(_HeaderSizes(paths), batch_size=256, num_workers=num_workers if len(paths) > 256 else 0)
    parts = list(loader)
    return torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.int32)


def resized_view_crops(sizes: Tensor, seed: int, epoch: int, index: Tensor, flip: bool) -> ViewCrops:
    """The RandomResizedCrop boxes and flips the file workers draw for ``index`` in ``epoch``.

    Each sample's generator is seeded with :func:`~kdlab.data.sample_rng.sample_seeds` and drawn
    as the workers draw it (:func:`~kdlab.data.transforms.resized_crop_draw`), so the rows equal
    what an online epoch would crop.
    """
    seeds = sample_seeds(seed, epoch, index).tolist()
    boxes = torch.zeros(len(seeds), 4, dtype=torch.int32)
    flips = torch.zeros(len(seeds), dtype=torch.bool)
    for r, ((h, w), s) in enumerate(zip(sizes.tolist(), seeds)):
        if h <= 0 or w <= 0:
            continue
        top, left, ch, cw, flipped = resized_crop_draw(h, w, torch.Generator().manual_seed(s), flip)
        boxes[r] = torch.tensor([top, left, ch, cw], dtype=torch.int32)
        flips[r] = flipped
    return ViewCrops(boxes, flips)


def compact_boxes(boxes: Tensor) -> Tensor:
    """``boxes`` as int16 when every value fits (the common case), else int32."""
    top = int(boxes.abs().max()) if boxes.numel() else 0
    return boxes.to(torch.int16 if top <= INT16_MAX else torch.int32)


def replays_resized_crops(images: ImageSet) -> bool:
    """True when the set's training crops are RandomResizedCrop boxes drawn per file."""
    return isinstance(images, FileImageSet) and images.mode == "resized_crop"
