"""``build_dataset``: find a dataset, cap / subset it, hold out validation, decode into memory.

The steps, the same for every registered dataset:
1. the builder finds the official train and test splits under ``root``;
2. ``limit_per_class`` keeps the first k images of each class (train and test; for tests);
3. ``subset_size`` keeps a seeded, stratified random subset of N training images (few-sample KD);
   ``stratify=False`` makes it, and the validation split, plain uniform random draws;
4. image files are decoded into one uint8 tensor when they fit (:mod:`kdlab.data.memory`), tensor
   sets are resized when ``image_size`` asks for it;
5. ``val_fraction`` of what is left of train is held out, stratified and seeded by ``split_seed``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch.nn.functional as F

from kdlab.data.bad_files import BadFileLog
from kdlab.data.bundle import DataBundle
from kdlab.data.catalog import DATASETS
from kdlab.data.imagesets import FileImageSet, ImageSet, TensorImageSet
from kdlab.data.memory import to_memory
from kdlab.data.splits import first_per_class, stratified_split, stratified_subset
from kdlab.errors import KdlabError


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return DATASETS.names()


def _check(val_fraction: float, subset_size: int | None, limit_per_class: int | None,
           image_size: int | None) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise KdlabError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for key, v in (("subset_size", subset_size), ("limit_per_class", limit_per_class),
                   ("image_size", image_size)):
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise KdlabError(f"{key} must be a positive integer or null, got {v!r}")


def resize_tensor_set(images: TensorImageSet, size: int) -> TensorImageSet:
    """Resize every image to size x size (bilinear, antialiased when shrinking), as uint8."""
    if images.image_size == (size, size) or len(images) == 0:
        return images
    x = F.interpolate(images.images.float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < min(images.image_size))
    return TensorImageSet(x.round_().clamp_(0, 255).to(images.images.dtype), images.targets)


def _prepare(s: ImageSet, *, name: str, root: Path, image_size: int | None,
             in_memory: bool | None, bad_log: BadFileLog, reduced_decode: bool) -> ImageSet:
    if isinstance(s, FileImageSet):
        s = replace(s, bad_log=bad_log, reduced_decode=reduced_decode)
        if image_size is not None:
            s = s.with_size(image_size)
        return to_memory(s, name=name, root=root, in_memory=in_memory, image_size=image_size)
    if isinstance(s, TensorImageSet) and image_size is not None:
        return resize_tensor_set(s, image_size)
    return s


def build_dataset(name: str, root: str | Path, *, val_fraction: float = 0.1, split_seed: int = 0,
                  download: bool = False, subset_size: int | None = None,
                  limit_per_class: int | None = None, image_size: int | None = None,
                  in_memory: bool | None = None, stratify: bool = True, on_bad_file: str = "error",
                  reduced_decode: bool = True) -> DataBundle:
    """Load dataset ``name`` from ``root`` as train / val / test :class:`ImageSet` s.

    ``val`` is a stratified ``val_fraction`` of the (capped, subset) training split, chosen by
    ``split_seed`` alone; ``test`` is the official test split. ``in_memory=None`` decodes image
    folders into one tensor when their images agree in size and fit in about 4 GB (``True`` always
    does, resizing to ``image_size``; ``False`` keeps files); datasets read from archives (CIFAR,
    Fashion-MNIST, digits) are tensors whatever it says. ``image_size`` resizes tensor sets and
    sets the crop size of file sets (default 224 for ImageNet-style ones). ``on_bad_file``
    (``error`` | ``skip``) says what an unreadable image file does (:mod:`kdlab.data.bad_files`);
    the bundle's ``bad_files`` log counts them. ``reduced_decode`` lets file sets decode JPEGs at
    reduced size where the crop allows (:mod:`kdlab.data.transforms`).
    """
    _check(val_fraction, subset_size, limit_per_class, image_size)
    bad_log = BadFileLog(on_bad_file)
    raw = DATASETS.get(name)(Path(root).expanduser(), download=download)
    train, test = raw.train, raw.test
    notes = [raw.train_source]
    if limit_per_class is not None:
        train = train.subset(first_per_class(train.targets, limit_per_class))
        test = test.subset(first_per_class(test.targets, limit_per_class))
        notes.append(f"first {limit_per_class} images per class of train and test")
    if subset_size is not None:
        if subset_size > len(train):
            raise KdlabError(f"subset_size {subset_size} exceeds the {len(train)} training images of {name}")
        train = train.subset(stratified_subset(train.targets, subset_size, split_seed, stratify))
        kind = "stratified" if stratify else "uniform"
        notes.append(f"random {kind} subset of {subset_size} (split_seed {split_seed})")
    kw = dict(name=name, root=raw.root, image_size=image_size, in_memory=in_memory, bad_log=bad_log,
              reduced_decode=reduced_decode)
    train, test = _prepare(train, **kw), _prepare(test, **kw)
    pool = len(train)
    val = None
    if val_fraction > 0:
        keep, held = stratified_split(train.targets, val_fraction, split_seed, stratify)
        train, val = train.subset(keep), train.subset(held)
    train_note = "; ".join(notes)
    val_note = (f"val: {len(val)} images held out of those {pool} ({val_fraction:g}, "
                f"{'stratified' if stratify else 'uniform random'}, "
                f"split_seed {split_seed})" if val is not None else "val: none (val_fraction 0)")
    mean, std = raw.stats
    return DataBundle(
        name=name, train=train, val=val, test=test, num_classes=len(raw.classes), classes=list(raw.classes),
        mean=mean, std=std, image_size=train.image_size, channels=3,
        splits_note=(f"train: {len(train)} images from the {train_note}; {val_note}; test: {len(test)} "
                     f"images, {raw.test_source}, for final numbers only"), bad_files=bad_log)
