"""Fashion-MNIST from idx files written in the original format (as Debian's dataset-fashion-mnist
installs them: ``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``).

These run without the Debian package: small idx files are generated here, gzipped or not, in each
folder the loader looks in (``<root>``, ``<root>/FashionMNIST/raw``, the Debian folder).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import build_dataset
from kdlab.data import fashion_mnist as fm
from kdlab.errors import KdlabError


def _idx(array: np.ndarray) -> bytes:
    """The idx encoding: 0, 0, dtype 0x08 (uint8), ndim, then big-endian int32 sizes, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", n) for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> Path:
    """Idx files whose first pixel encodes the label and whose last pixel encodes the index."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.random.default_rng(n).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels
        images[:, 27, 27] = np.arange(n, dtype=np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = _idx(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / stem).write_bytes(data)
    return folder


def test_reads_gzipped_idx_files_in_root(tmp_path):
    write_fashion_mnist(tmp_path)
    data = build_dataset("fashion-mnist", tmp_path, val_fraction=0.1)
    assert data.num_classes == 10 and data.classes[0] == "T-shirt/top" and data.classes[-1] == "Ankle boot"
    assert data.image_size == (28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (36, 4, 20)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (3, 28, 28)
    # gray repeated to 3 channels; pixel (0, 0) is the label, so images and labels stay paired
    assert torch.equal(data.test.images[:, 0], data.test.images[:, 2])
    assert torch.equal(data.test.images[:, 0, 0, 0].long(), data.test.targets)
    assert data.test.images[:, 0, 27, 27].tolist() == list(range(20))  # official order kept
    assert torch.bincount(data.val.targets, minlength=10).max() == 1  # stratified: no class twice
    assert "test" in data.splits_note and "t10k" in data.splits_note


def test_plain_idx_files_in_torchvision_folder(tmp_path):
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    data = build_dataset("fashion-mnist", tmp_path, val_fraction=0)
    assert (len(data.train), len(data.test)) == (40, 20)


def test_debian_folder_is_the_fallback(tmp_path, monkeypatch):
    debian = write_fashion_mnist(tmp_path / "usr" / "share" / "datasets" / "fashion-mnist")
    monkeypatch.setattr(fm, "DEBIAN_ROOT", debian)
    data = build_dataset("fashion-mnist", tmp_path / "nowhere", val_fraction=0)
    assert (len(data.train), len(data.test)) == (40, 20)
    assert str(debian) in data.splits_note


def test_debian_package_path_is_what_the_package_installs():
    # `dpkg -c dataset-fashion-mnist_*.deb`: ./usr/share/datasets/fashion-mnist/<the four idx .gz files>
    assert str(fm.DEBIAN_ROOT) == "/usr/share/datasets/fashion-mnist"
    assert {f"{s}.gz" for s in fm.FILES} == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}


def test_missing_files_name_the_layout_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_ROOT", tmp_path / "no-debian")
    with pytest.raises(KdlabError) as err:
        build_dataset("fashion-mnist", tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    assert "train-images-idx3-ubyte.gz" in msg and "dataset-fashion-mnist" in msg
    assert str(tmp_path / "nowhere") in msg


def test_a_non_idx_file_is_one_line(tmp_path):
    write_fashion_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not an idx file at all"))
    with pytest.raises(KdlabError, match="not a uint8 idx file"):
        build_dataset("fashion-mnist", tmp_path)


def test_a_truncated_idx_file_is_one_line(tmp_path):
    write_fashion_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(KdlabError, match="truncated or damaged"):
        build_dataset("fashion-mnist", tmp_path)
