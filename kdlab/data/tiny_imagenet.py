"""Tiny-ImageNet in its own layout (64x64 JPEGs).

``<root>/wnids.txt``, ``<root>/train/<wnid>/images/*.JPEG``, ``<root>/val/images/*.JPEG`` and
``<root>/val/val_annotations.txt`` (file, wnid, box). The official val split has labels and acts as
the test split; the validation split is held out of train. Classes are the wnids in sorted order
(as an ImageFolder over ``train/`` would number them); the number of classes is the number of
wnids, so cut-down copies (e.g. the 100-class subset in ../shared) work as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kdlab.data.catalog import RawDataset, find_root, register_dataset
from kdlab.data.constants import IMAGENET_STATS
from kdlab.data.imagesets import FileImageSet
from kdlab.errors import KdlabError

LAYOUT = ("wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt")
SUBFOLDERS = ("tiny-imagenet-200", "tiny-imagenet-200-sub100")
IMAGE_EXT = (".jpeg", ".jpg", ".png")


def _has_layout(p: Path) -> bool:
    return ((p / "wnids.txt").is_file() and (p / "train").is_dir() and (p / "val" / "images").is_dir()
            and (p / "val" / "val_annotations.txt").is_file())


def _images(folder: Path) -> list[str]:
    return sorted(e.path for e in os.scandir(folder) if e.name.lower().endswith(IMAGE_EXT))


@register_dataset("tiny-imagenet")
def tiny_imagenet(root: Path, *, download: bool = False) -> RawDataset:
    """Tiny-ImageNet: 500 train and 50 val images per class, 64x64, ImageNet constants."""
    found = find_root(root, _has_layout, SUBFOLDERS)
    if found is None:
        raise KdlabError(f"tiny-imagenet not found: expected {root} (or {root}/{SUBFOLDERS[0]}) to hold "
                         f"{LAYOUT}; unpack tiny-imagenet-200.zip there")
    classes = sorted({w.strip() for w in (found / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(classes)}
    paths: list[str] = []
    targets: list[int] = []
    for w in classes:
        folder = found / "train" / w / "images"
        if not folder.is_dir():
            raise KdlabError(f"tiny-imagenet: {folder} is missing (wnids.txt lists {w}); expected {LAYOUT}")
        files = _images(folder)
        paths += files
        targets += [index[w]] * len(files)
    present = set(os.listdir(found / "val" / "images"))
    test_paths: list[str] = []
    test_targets: list[int] = []
    for line in sorted((found / "val" / "val_annotations.txt").read_text().splitlines()):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            continue
        fname, w = parts[0], parts[1]
        if w not in index:
            raise KdlabError(f"tiny-imagenet: val_annotations.txt labels {fname} as {w}, not in wnids.txt")
        if fname not in present:
            raise KdlabError(f"tiny-imagenet: {found / 'val' / 'images' / fname} is missing "
                             "(listed in val_annotations.txt)")
        test_paths.append(str(found / "val" / "images" / fname))
        test_targets.append(index[w])

    def files(p: list[str], t: list[int]) -> FileImageSet:
        return FileImageSet(tuple(p), torch.tensor(t, dtype=torch.int64), crop=(64, 64), mode="fixed")

    return RawDataset(train=files(paths, targets), test=files(test_paths, test_targets), classes=classes,
                      stats=IMAGENET_STATS, root=found,
                      train_source="official train split (train/<wnid>/images)",
                      test_source="official val split (val/images + val_annotations.txt), used as test")
