"""Image-folder datasets: ``<root>/train/<class>/*`` plus ``<root>/test/<class>/*`` or ``val/``.

``imagefolder`` is the generic one; ``imagenet``, ``places365`` and ``cifar10-jpeg`` are the same
layout under a name, with their own constants and pipeline. Files are indexed with the functions
torchvision's ImageFolder uses (``find_classes``, ``make_dataset``); test-split classes are matched
to the train classes by folder name. The labelled evaluation folder (``test/``, else ``val/``, as
for ImageNet) is the test split; the validation split is always held out of ``train/``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from kdlab.data.catalog import RawDataset, find_root, register_dataset
from kdlab.data.constants import IMAGENET_STATS, Stats
from kdlab.data.decode import sample_sizes
from kdlab.data.imagesets import FileImageSet, FileMode
from kdlab.errors import KdlabError

EVAL_FOLDERS = ("test", "val")


def _eval_folder(root: Path) -> Path | None:
    return next((root / n for n in EVAL_FOLDERS if (root / n).is_dir()), None)


def _has_layout(root: Path) -> bool:
    return (root / "train").is_dir() and _eval_folder(root) is not None


def index_folder(folder: Path, class_to_idx: dict[str, int] | None = None
                 ) -> tuple[list[str], torch.Tensor, list[str]]:
    """(paths, targets, classes) of ``folder/<class>/<image>``, classes sorted by name.

    With ``class_to_idx`` (the train classes), the folder's classes must be among them.
    """
    try:
        classes, found = find_classes(str(folder))
    except FileNotFoundError as e:
        raise KdlabError(f"no class folders in {folder}: {e}") from None
    if class_to_idx is not None:
        extra = sorted(set(classes) - set(class_to_idx))
        if extra:
            raise KdlabError(f"{folder} has classes not in train/: {', '.join(extra[:5])}")
        found = {c: class_to_idx[c] for c in classes}
    try:
        samples = make_dataset(str(folder), found, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise KdlabError(f"{folder}: {str(e).splitlines()[0]}") from None
    paths = [p for p, _ in samples]
    targets = torch.tensor([t for _, t in samples], dtype=torch.int64)
    return paths, targets, sorted(found, key=found.__getitem__)


def load_folder(name: str, root: Path, *, stats: Stats, mode: FileMode | None,
                subfolders: tuple[str, ...] = ()) -> RawDataset:
    """Index an image-folder dataset; ``mode=None`` picks "fixed" when sampled sizes agree."""
    found = find_root(root, _has_layout, subfolders)
    if found is None:
        where = " or ".join(str(p) for p in (root, *(root / s for s in subfolders)))
        raise KdlabError(f"{name} not found: expected {where} to hold train/<class>/<images> and "
                         f"val/<class>/<images> (or test/<class>/<images>); place the image folders there")
    eval_dir = _eval_folder(found)
    train_paths, train_t, classes = index_folder(found / "train")
    test_paths, test_t, _ = index_folder(eval_dir, {c: i for i, c in enumerate(classes)})
    sizes = sample_sizes(train_paths) if mode != "resized_crop" else set()
    if mode is None:
        mode = "fixed" if len(sizes) == 1 else "resized_crop"
    crop = min(sizes) if mode == "fixed" else (224, 224)  # fixed: the images' own size
    sets = [FileImageSet(tuple(p), t, crop=crop, mode=mode)
            for p, t in ((train_paths, train_t), (test_paths, test_t))]
    return RawDataset(train=sets[0], test=sets[1], classes=classes, stats=stats, root=found,
                      train_source=f"official train split ({found / 'train'})",
                      test_source=f"official labelled evaluation split ({eval_dir})")


@register_dataset("imagefolder")
def imagefolder(root: Path, *, download: bool = False) -> RawDataset:
    """Any ``train/`` + ``val/`` (or ``test/``) class-folder tree; ImageNet constants."""
    return load_folder("imagefolder", root, stats=IMAGENET_STATS, mode=None)


@register_dataset("imagenet")
def imagenet(root: Path, *, download: bool = False) -> RawDataset:
    """ImageNet-1k as class folders (train/, val/); RandomResizedCrop 224 pipeline."""
    return load_folder("imagenet", root, stats=IMAGENET_STATS, mode="resized_crop",
                       subfolders=("imagenet", "ILSVRC2012"))


@register_dataset("places365")
def places365(root: Path, *, download: bool = False) -> RawDataset:
    """Places365 as class folders (train/, val/); RandomResizedCrop 224 pipeline."""
    return load_folder("places365", root, stats=IMAGENET_STATS, mode="resized_crop",
                       subfolders=("places365",))


@register_dataset("cifar10-jpeg")
def cifar10_jpeg(root: Path, *, download: bool = False) -> RawDataset:
    """CIFAR-10 as 32x32 JPEG folders (train/, test/); ImageNet constants, as its teachers used."""
    return load_folder("cifar10-jpeg", root, stats=IMAGENET_STATS, mode="fixed",
                       subfolders=("cifar10-jpeg",))
