"""Tiny-ImageNet from a fixture tree in its own layout (wnids.txt, train/<wnid>/images, val/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data import IMAGENET_STATS, TensorImageSet, build_dataset
from kdlab.errors import KdlabError

WNIDS = ["n09999999", "n01443537", "n02124075"]  # wnids.txt is not sorted; classes are


def _jpeg(path: Path, value: int, mode: str = "RGB") -> None:
    shape = (64, 64, 3) if mode == "RGB" else (64, 64)
    Image.fromarray(np.full(shape, value, dtype=np.uint8), mode=mode).save(path, quality=95)


def write_tiny(root: Path, train: int = 5, val: int = 2) -> Path:
    """A tiny-imagenet-200 tree; every image is flat grey at 50 + 50 * (sorted class index)."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for w in WNIDS:
        value = 50 + 50 * sorted(WNIDS).index(w)
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(train):
            _jpeg(folder / f"{w}_{i}.JPEG", value, mode="L" if i == 0 else "RGB")
        for _ in range(val):
            name = f"val_{len(lines)}.JPEG"
            _jpeg(root / "val" / "images" / name, value)
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines[::-1]) + "\n")
    return root


def test_tiny_imagenet_fixture(tmp_path):
    write_tiny(tmp_path / "tiny-imagenet-200")
    data = build_dataset("tiny-imagenet", tmp_path, val_fraction=0.2, split_seed=1)  # finds the subfolder
    assert data.classes == sorted(WNIDS) and data.num_classes == 3
    assert (data.mean, data.std) == IMAGENET_STATS and data.image_size == (64, 64)
    assert isinstance(data.train, TensorImageSet)
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 6)
    assert torch.bincount(data.val.targets).tolist() == [1, 1, 1]
    for s in (data.train, data.val, data.test):  # labels match pixel values, grayscale became RGB
        means = s.images.float().mean(dim=(1, 2, 3))
        assert torch.allclose(means, 50 + 50 * s.targets.float(), atol=2)
    assert "val split" in data.splits_note and "test" in data.splits_note
    again = build_dataset("tiny-imagenet", tmp_path / "tiny-imagenet-200", val_fraction=0.2, split_seed=1)
    assert torch.equal(again.val.images, data.val.images)


def test_tiny_imagenet_wrong_layout(tmp_path):
    root = write_tiny(tmp_path / "tiny")
    (root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(KdlabError) as e:
        build_dataset("tiny-imagenet", root)
    msg = str(e.value)
    assert "\n" not in msg and "val/val_annotations.txt" in msg and "train/<wnid>/images" in msg


def test_tiny_imagenet_missing_class_folder(tmp_path):
    root = write_tiny(tmp_path / "tiny")
    (root / "wnids.txt").write_text("\n".join([*WNIDS, "n00000001"]))
    with pytest.raises(KdlabError, match="n00000001"):
        build_dataset("tiny-imagenet", root)
