"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle archives, read without md5 checks.

Layout (what ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` unpack to):
``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` and
``<root>/cifar-100-python/{train,test,meta}``; each data pickle holds ``data`` (N x 3072 uint8,
channel-major) and ``labels`` / ``fine_labels``. ``root`` may also be that folder itself.
When only the archive itself lies in ``root`` (``<root>/cifar-100-python.tar.gz``), it is unpacked
there first, offline. torchvision is used only to download, when ``download=True``.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdlab.data.catalog import RawDataset, find_root, register_dataset
from kdlab.data.constants import CIFAR10_STATS, CIFAR100_STATS, Stats
from kdlab.data.imagesets import TensorImageSet
from kdlab.errors import KdlabError


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    stats: Stats
    archive: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)


CIFAR10 = CifarSpec("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                    ("test_batch",), "batches.meta", "labels", "label_names", CIFAR10_STATS,
                    "cifar-10-python.tar.gz")
CIFAR100 = CifarSpec("cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_labels",
                     "fine_label_names", CIFAR100_STATS, "cifar-100-python.tar.gz")


def unpickle(path: Path) -> dict[str, object]:
    """Load a CIFAR pickle (Python 2 or 3 written) with str keys."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _split(folder: Path, files: tuple[str, ...], label_key: str) -> TensorImageSet:
    data, labels = [], []
    for name in files:
        d = unpickle(folder / name)
        data.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(x) for x in d[label_key])
    return TensorImageSet(torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.int64))


def _download(spec: CifarSpec, root: Path) -> None:
    from torchvision import datasets

    cls = datasets.CIFAR10 if spec.name == "cifar10" else datasets.CIFAR100
    try:
        cls(str(root), train=True, download=True)
    except Exception as e:  # offline, proxy, disk full: one line for the user
        raise KdlabError(f"{spec.name}: download into {root} failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); place {spec.archive} unpacked "
                         f"as {root / spec.folder}/ instead") from None


def _unpack(spec: CifarSpec, root: Path) -> None:
    """Unpack ``<root>/<spec.archive>`` (the file torchvision downloads) into ``root``."""
    archive = root / spec.archive
    try:
        with tarfile.open(archive, "r:gz") as tf:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuses links and paths outside root
                tf.extractall(root, filter="data")
            else:
                members = tf.getmembers()
                for m in members:
                    if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise tarfile.TarError(f"unexpected member {m.name!r}")
                tf.extractall(root, members=members)
    except (OSError, tarfile.TarError) as e:
        raise KdlabError(f"{spec.name}: could not unpack {archive} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); replace it with the original "
                         f"{spec.archive}") from None


def load_cifar(spec: CifarSpec, root: Path, download: bool) -> RawDataset:
    def ok(p: Path) -> bool:
        return all((p / f).is_file() for f in spec.files)

    folder = find_root(root, ok, [spec.folder])
    if folder is None and (root / spec.archive).is_file():
        _unpack(spec, root)
        folder = find_root(root, ok, [spec.folder])
    if folder is None and download:
        _download(spec, root)
        folder = find_root(root, ok, [spec.folder])
    if folder is None:
        listing = "{" + ",".join(spec.files) + "}"
        if spec.name == "cifar10":
            listing = "{data_batch_1..5,test_batch,batches.meta}"
        raise KdlabError(f"{spec.name} not found: expected {root / spec.folder}/{listing} (the unpacked "
                         f"{spec.archive}); set download=true when online, or place {spec.archive} in {root}")
    meta = unpickle(folder / spec.meta)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec.names_key]]
    return RawDataset(
        train=_split(folder, spec.train, spec.label_key), test=_split(folder, spec.test, spec.label_key),
        classes=classes, stats=spec.stats, root=folder,
        train_source=f"official train split ({', '.join(spec.train)})",
        test_source=f"official test split ({', '.join(spec.test)})")


@register_dataset("cifar10")
def cifar10(root: Path, *, download: bool = False) -> RawDataset:
    """CIFAR-10: 50,000 train / 10,000 test images, 32x32, 10 classes."""
    return load_cifar(CIFAR10, root, download)


@register_dataset("cifar100")
def cifar100(root: Path, *, download: bool = False) -> RawDataset:
    """CIFAR-100: 50,000 train / 10,000 test images, 32x32, 100 fine classes."""
    return load_cifar(CIFAR100, root, download)
