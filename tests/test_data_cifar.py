"""CIFAR-10/100 from small fixtures written in torchvision's real pickle format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import CIFAR10_STATS, CIFAR100_STATS, TensorImageSet, build_dataset
from kdlab.errors import KdlabError


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, labels: list[int]) -> np.ndarray:
    """N x 3072 uint8 rows whose first red pixel encodes the label (to check order)."""
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    data[:, 0] = np.asarray(labels, dtype=np.uint8)
    return data


def write_cifar100(root: Path, per_class_train: int = 6, per_class_test: int = 2,
                   classes: int = 5) -> Path:
    """A ``cifar-100-python`` folder: train/test/meta pickles with bytes keys, as the real one."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class_{i}".encode() for i in range(classes)]
    for split, k in (("train", per_class_train), ("test", per_class_test)):
        labels = [i % classes for i in range(k * classes)]
        _dump(folder / split, {b"filenames": [b"x.png"] * len(labels), b"batch_label": split.encode(),
                               b"fine_labels": labels, b"coarse_labels": [0] * len(labels),
                               b"data": _images(rng, labels)})
    _dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"all"]})
    return root


def write_cifar10(root: Path, per_batch: int = 10) -> Path:
    """A ``cifar-10-batches-py`` folder: data_batch_1..5, test_batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        _dump(folder / name, {b"batch_label": name.encode(), b"labels": labels,
                              b"data": _images(rng, labels), b"filenames": [b"x.png"] * per_batch})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_vis": 3072})
    return root


def test_cifar100_fixture(tmp_path):
    root = write_cifar100(tmp_path)
    data = build_dataset("cifar100", root, val_fraction=0.2, split_seed=3)
    assert data.num_classes == 5 and data.classes == [f"class_{i}" for i in range(5)]
    assert (data.mean, data.std) == CIFAR100_STATS
    assert data.image_size == (32, 32) and data.channels == 3
    assert isinstance(data.train, TensorImageSet)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    for s in (data.train, data.val, data.test):
        assert s.images.shape[1:] == (3, 32, 32) and s.images.dtype == torch.uint8
        assert torch.equal(s.images[:, 0, 0, 0].long(), s.targets)  # labels follow their images
    assert sorted(torch.bincount(data.val.targets, minlength=5).tolist()) == [1, 1, 1, 1, 2]  # stratified
    assert "test" in data.splits_note and "split_seed 3" in data.splits_note


def test_cifar100_pixels_are_channel_major(tmp_path):
    root = write_cifar100(tmp_path, per_class_train=1, per_class_test=1, classes=2)
    with open(root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    data = build_dataset("cifar100", root / "cifar-100-python", val_fraction=0)  # the folder itself
    expected = torch.from_numpy(raw.reshape(-1, 3, 32, 32))
    assert torch.equal(data.train.images, expected)


def test_cifar10_fixture(tmp_path):
    root = write_cifar10(tmp_path)
    data = build_dataset("cifar10", root, val_fraction=0.1)
    assert data.classes[0] == "airplane" and data.num_classes == 10
    assert (data.mean, data.std) == CIFAR10_STATS
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 10)
    assert torch.equal(data.test.images[:, 0, 0, 0].long(), data.test.targets)


def test_cifar_missing_offline_error(tmp_path):
    with pytest.raises(KdlabError) as e:
        build_dataset("cifar100", tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg
    assert "download=true" in msg and "{train,test,meta}" in msg


def test_cifar10_missing_names_layout(tmp_path):
    layout = r"cifar-10-batches-py/\{data_batch_1\.\.5,test_batch,batches\.meta\}"
    with pytest.raises(KdlabError, match=layout):
        build_dataset("cifar10", tmp_path)


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, *a, **k):
            raise RuntimeError("Error downloading cifar-10-python.tar.gz:\n<urlopen error no network>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(KdlabError) as e:
        build_dataset("cifar10", tmp_path, download=True)
    assert "\n" not in str(e.value) and "download" in str(e.value)


def test_cifar_download_then_read(tmp_path, monkeypatch):
    import torchvision.datasets

    class FakeDownload:  # stands in for torchvision's downloader: unpacks the archive into root
        def __init__(self, root, train=True, download=False):
            write_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeDownload)
    assert len(build_dataset("cifar10", tmp_path, download=True, val_fraction=0).train) == 50


def test_an_archive_placed_in_root_is_unpacked_offline(tmp_path):
    import tarfile

    src = write_cifar100(tmp_path / "src")
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tf:
        tf.add(src / "cifar-100-python", arcname="cifar-100-python")
    data = build_dataset("cifar100", root, val_fraction=0)
    assert (len(data.train), len(data.test)) == (30, 10)
    assert (root / "cifar-100-python" / "meta").is_file()


def test_a_damaged_archive_is_one_line(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(KdlabError) as e:
        build_dataset("cifar10", tmp_path)
    assert "\n" not in str(e.value) and "could not unpack" in str(e.value)
