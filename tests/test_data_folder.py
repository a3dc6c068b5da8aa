"""Image-folder datasets from PNG/JPEG fixture trees: indexing, decoding, caching, file loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data import FileImageSet, TensorImageSet, build_dataset, build_loader, memory
from kdlab.data import cache as cache_mod
from kdlab.errors import KdlabError

CLASSES = ["cat", "dog", "zebra"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _pixels(cls: int, i: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(100 * cls + i)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    img[0, 0] = (cls * 60, i, 0)  # label and index readable from the first pixel
    return img


def write_folder(root: Path, *, train: int = 6, test: int = 2, size=(12, 12), eval_dir: str = "val",
                 sizes: list[tuple[int, int]] | None = None) -> Path:
    """``root/{train,<eval_dir>}/<class>/<i>.png``; ``sizes`` cycles image sizes when given."""
    for split, n in (("train", train), (eval_dir, test)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                s = sizes[i % len(sizes)] if sizes else size
                Image.fromarray(_pixels(c, i, s)).save(folder / f"{i:03d}.png")
    return root


def test_imagefolder_in_memory(tmp_path):
    root = write_folder(tmp_path)
    gray = Image.fromarray(np.full((12, 12), 77, dtype=np.uint8), mode="L")
    gray.save(root / "train" / "dog" / "999.jpg", quality=95)  # grayscale JPEG among PNGs
    data = build_dataset("imagefolder", root, val_fraction=0)
    assert data.classes == CLASSES and data.num_classes == 3 and data.channels == 3
    assert (data.mean, data.std) == (MEAN, STD)
    assert isinstance(data.train, TensorImageSet) and data.image_size == (12, 12)
    assert (len(data.train), len(data.test)) == (19, 6)
    assert torch.bincount(data.train.targets).tolist() == [6, 7, 6]
    first = data.train.images[0].permute(1, 2, 0).numpy()
    assert np.array_equal(first, _pixels(0, 0, (12, 12)))  # PNG decodes exactly, in sorted order
    g = data.train.images[12]  # dog/999.jpg sorts last among dogs (6 cats, then 7 dogs)
    assert data.train.targets[12] == 1 and torch.equal(g[0], g[1]) and abs(g.float().mean() - 77) < 2
    assert torch.equal(data.test.images[:, 0, 0, 0], data.test.targets.to(torch.uint8) * 60)
    assert "val" in data.splits_note


def test_cache_is_reused(tmp_path, monkeypatch):
    root = write_folder(tmp_path)
    first = build_dataset("imagefolder", root)
    assert len(list((root / ".kdlab-cache").glob("imagefolder-*.pt"))) == 2  # train and test

    def no_decode(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(memory, "decode_files", no_decode)
    again = build_dataset("imagefolder", root)
    assert torch.equal(first.train.images, again.train.images)
    (root / "train" / "cat" / "000.png").unlink()  # another file list: another key
    monkeypatch.undo()
    assert len(build_dataset("imagefolder", root, val_fraction=0).train) == 17


def test_cache_falls_back_to_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache_mod.os, "access", lambda *a: False)  # root not writable
    assert cache_mod.cache_dir(tmp_path / "data") == tmp_path / "xdg" / "kdlab"


def test_file_loader_equals_tensor_loader(tmp_path):
    """The same PNGs through the file path (workers) and the tensor path give the same batches."""
    root = write_folder(tmp_path, train=10)
    files = build_dataset("imagefolder", root, in_memory=False, split_seed=1)
    tensors = build_dataset("imagefolder", root, in_memory=True, split_seed=1)
    assert isinstance(files.train, FileImageSet) and files.train.mode == "fixed"
    kw = dict(batch_size=4, train=True, mean=MEAN, std=STD, seed=5, with_index=True)
    a = build_loader(files.train, num_workers=2, **kw)
    b = build_loader(tensors.train, **kw)
    for loader in (a, b):
        loader.set_epoch(3, start_batch=1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.index, y.index) and torch.equal(x.target, y.target)
        torch.testing.assert_close(x.image, y.image, atol=1e-6, rtol=0)


def test_mixed_sizes_stay_on_files(tmp_path):
    root = write_folder(tmp_path, sizes=[(20, 30), (24, 24), (30, 18)])
    data = build_dataset("imagefolder", root, image_size=16, val_fraction=0.2)
    assert isinstance(data.train, FileImageSet) and data.train.mode == "resized_crop"
    assert data.image_size == (16, 16)
    train = build_loader(data.train, batch_size=5, train=True, mean=MEAN, std=STD, num_workers=0,
                         with_index=True, seed=1)
    epoch = [(b.image, b.index) for b in train]
    assert [x.shape[0] for x, _ in epoch] == [5, 5, 4] and epoch[0][0].shape[1:] == (3, 16, 16)
    train.set_epoch(1, start_batch=1)  # resume: same crops, same order
    for (x, i), b in zip(epoch[1:], train, strict=True):
        assert torch.equal(i, b.index) and torch.equal(x, b.image)
    val = build_loader(data.val, batch_size=8, train=False, mean=MEAN, std=STD, num_workers=0)
    assert next(iter(val)).image.shape == (4, 3, 16, 16)  # round(0.2 * 18) held out


def test_forced_in_memory(tmp_path):
    root = write_folder(tmp_path, sizes=[(20, 30), (24, 24)])
    with pytest.raises(KdlabError, match="differ in size.*image_size"):
        build_dataset("imagefolder", root, in_memory=True)
    data = build_dataset("imagefolder", root, in_memory=True, image_size=10)
    assert isinstance(data.train, TensorImageSet) and data.train.images.shape[1:] == (3, 10, 10)


def test_alias_with_test_folder(tmp_path):
    root = write_folder(tmp_path / "cifar10-jpeg", eval_dir="test").parent
    data = build_dataset("cifar10-jpeg", root, val_fraction=0.5)  # finds root/cifar10-jpeg
    assert (len(data.train), len(data.val), len(data.test)) == (9, 9, 6)
    assert (data.mean, data.std) == (MEAN, STD) and isinstance(data.test, TensorImageSet)
    assert "test" in data.splits_note


def test_eval_classes_must_exist_in_train(tmp_path):
    root = write_folder(tmp_path)
    (root / "val" / "unicorn").mkdir()
    Image.fromarray(_pixels(0, 0, (12, 12))).save(root / "val" / "unicorn" / "0.png")
    with pytest.raises(KdlabError, match="unicorn"):
        build_dataset("imagefolder", root)


def test_missing_folder_error(tmp_path):
    with pytest.raises(KdlabError) as e:
        build_dataset("imagenet", tmp_path / "imagenet-missing")
    msg = str(e.value)
    assert "\n" not in msg and "train/<class>/<images>" in msg and "val/<class>/<images>" in msg
