"""Fashion-MNIST from its original idx files (28x28 gray, repeated to 3 channels).

Files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
``t10k-labels-idx1-ubyte[.gz]``, looked for in ``<root>``, ``<root>/FashionMNIST/raw`` (torchvision's
download folder), ``<root>/fashion-mnist`` and Debian's ``/usr/share/datasets/fashion-mnist``
(package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from kdlab.data.catalog import RawDataset, find_root, register_dataset
from kdlab.data.constants import FASHION_MNIST_STATS
from kdlab.data.imagesets import TensorImageSet
from kdlab.errors import KdlabError

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
SUBFOLDERS = ("FashionMNIST/raw", "fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def _file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)


def _has_files(folder: Path) -> bool:
    return all(_file(folder, s) is not None for s in FILES)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise KdlabError(f"{path} is not a uint8 idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = len(data) - (4 + 4 * ndim)
    if body != int(np.prod(shape)):
        raise KdlabError(f"{path} is truncated or damaged: its header declares shape {shape} "
                         f"({int(np.prod(shape))} bytes) but it holds {max(body, 0)}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _split(folder: Path, prefix: str) -> TensorImageSet:
    images = torch.from_numpy(read_idx(_file(folder, f"{prefix}-images-idx3-ubyte")).copy())
    labels = torch.from_numpy(read_idx(_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64))
    return TensorImageSet(images[:, None].expand(-1, 3, -1, -1).contiguous(), labels)


@register_dataset("fashion-mnist")
def fashion_mnist(root: Path, *, download: bool = False) -> RawDataset:
    """Fashion-MNIST: 60,000 train / 10,000 test images, 28x28, 10 classes."""
    found = find_root(root, _has_files, SUBFOLDERS) or find_root(DEBIAN_ROOT, _has_files)
    if found is None and download:
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(root), train=True, download=True)
        except Exception as e:
            raise KdlabError(f"fashion-mnist: download into {root} failed ({type(e).__name__}); "
                             f"install dataset-fashion-mnist or place the idx files in {root}") from None
        found = find_root(root, _has_files, SUBFOLDERS)
    if found is None:
        raise KdlabError(f"fashion-mnist not found: expected {root}/{{{','.join(s + '.gz' for s in FILES)}}} "
                         f"or {DEBIAN_ROOT}; apt-get install dataset-fashion-mnist, set download=true "
                         "when online, or place the idx files there")
    return RawDataset(train=_split(found, "train"), test=_split(found, "t10k"), classes=list(CLASSES),
                      stats=FASHION_MNIST_STATS, root=found,
                      train_source=f"official train split ({found}/train-*)",
                      test_source=f"official test split ({found}/t10k-*)")
