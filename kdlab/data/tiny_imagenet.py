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


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KdlabError(f"tiny-imagenet: {path} is not a UTF-8 text file (bad byte at offset {e.start}); "
                         f"expected {LAYOUT}") from None


def val_annotations(path: Path, index: dict[str, int]) -> list[tuple[str, str]]:
    """``(file, wnid)`` per line of ``val_annotations.txt``, in sorted line order; blank lines are skipped.

    Each line is ``<file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1>`` (tabs, or other whitespace); a line
    without its wnid, a wnid missing from ``wnids.txt``, a file twice or a file missing from
    ``val/images`` is refused with the line number.
    """
    present = set(os.listdir(path.parent / "images"))
    seen: dict[str, int] = {}
    rows: list[tuple[str, str, str]] = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        fname, w = parts[0].strip(), (parts[1].strip() if len(parts) > 1 else "")
        where = f"tiny-imagenet: {path} line {number}"
        if not fname or not w:
            raise KdlabError(f"{where} has no label: expected '<file> <wnid> <x0> <y0> <x1> <y1>' "
                             f"separated by tabs, got {line!r}")
        if w not in index:
            hint = " (a number: is the wnid missing from the line?)" if w.lstrip("-").isdigit() else ""
            raise KdlabError(f"{where} labels {fname} as {w!r}, which is not in wnids.txt{hint}")
        if fname in seen:
            raise KdlabError(f"{where} lists {fname} again (first on line {seen[fname]}); each file once")
        if fname not in present:
            raise KdlabError(f"{where} lists {fname}, but {path.parent / 'images' / fname} is missing")
        seen[fname] = number
        rows.append((line, fname, w))
    return [(fname, w) for _, fname, w in sorted(rows)]


@register_dataset("tiny-imagenet")
def tiny_imagenet(root: Path, *, download: bool = False) -> RawDataset:
    """Tiny-ImageNet: 500 train and 50 val images per class, 64x64, ImageNet constants."""
    found = find_root(root, _has_layout, SUBFOLDERS)
    if found is None:
        raise KdlabError(f"tiny-imagenet not found: expected {root} (or {root}/{SUBFOLDERS[0]}) to hold "
                         f"{LAYOUT}; unpack tiny-imagenet-200.zip there")
    classes = sorted({w.strip() for w in _text(found / "wnids.txt").split() if w.strip()})
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
    test_paths: list[str] = []
    test_targets: list[int] = []
    for fname, w in val_annotations(found / "val" / "val_annotations.txt", index):
        test_paths.append(str(found / "val" / "images" / fname))
        test_targets.append(index[w])

    def files(p: list[str], t: list[int]) -> FileImageSet:
        return FileImageSet(tuple(p), torch.tensor(t, dtype=torch.int64), crop=(64, 64), mode="fixed")

    return RawDataset(train=files(paths, targets), test=files(test_paths, test_targets), classes=classes,
                      stats=IMAGENET_STATS, root=found,
                      train_source="official train split (train/<wnid>/images)",
                      test_source="official val split (val/images + val_annotations.txt), used as test")
