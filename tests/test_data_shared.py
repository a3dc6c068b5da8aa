"""Real data: Tiny-ImageNet (100-class subset) and CIFAR-10 JPEGs from ../shared, Fashion-MNIST.

The archives are unpacked once into a cache folder (see shared_data.py); the fast tests load a few
hundred images, the ``slow`` ones the whole sets and print the decode / cache times.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import extracted

from kdlab.data import IMAGENET_STATS, TensorImageSet, build_dataset, build_loader
from kdlab.data.fashion_mnist import DEBIAN_ROOT

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.shared
def test_tiny_imagenet_real_subset():
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    data = build_dataset("tiny-imagenet", root, limit_per_class=3, val_fraction=0.2)
    wnids = sorted((root / "wnids.txt").read_text().split())
    assert data.num_classes == 100 and data.classes == wnids
    assert (len(data.train), len(data.val), len(data.test)) == (240, 60, 300)
    assert isinstance(data.train, TensorImageSet) and data.train.images.shape[1:] == (3, 64, 64)
    assert torch.bincount(data.val.targets, minlength=100).max() == 1  # 60 of 100 classes, one each
    assert torch.bincount(data.test.targets, minlength=100).tolist() == [3] * 100
    pool = build_dataset("tiny-imagenet", root, limit_per_class=3, val_fraction=0)
    first = sorted((root / "train" / wnids[0] / "images").iterdir())[0]
    with Image.open(first) as im:
        ref = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float()
    assert (pool.train.images[0].float() - ref).abs().mean() < 1.5  # same image, any JPEG decoder
    batch = next(iter(build_loader(data.train, batch_size=64, train=True, mean=data.mean, std=data.std)))
    assert batch.image.shape == (64, 3, 64, 64) and abs(float(batch.image.mean())) < 1


@pytest.mark.shared
def test_cifar10_jpeg_real_subset():
    root = extracted("cifar10-jpeg.tar.gz")
    data = build_dataset("cifar10-jpeg", root, limit_per_class=30, val_fraction=0.1)
    assert data.classes == CIFAR10_CLASSES and (data.mean, data.std) == IMAGENET_STATS
    assert (len(data.train), len(data.val), len(data.test)) == (270, 30, 300)
    assert isinstance(data.test, TensorImageSet) and data.image_size == (32, 32)
    assert torch.bincount(data.val.targets).tolist() == [3] * 10
    means = data.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.06)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("name,archive,sizes", [
    ("tiny-imagenet", "tiny-imagenet-200-sub100.tar.gz", (45000, 5000, 5000)),
    ("cifar10-jpeg", "cifar10-jpeg.tar.gz", (45000, 5000, 10000)),
])
def test_full_real_sets(name, archive, sizes):
    root = extracted(archive)
    t = time.perf_counter()
    data = build_dataset(name, root)
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = build_dataset(name, root)
    cached = time.perf_counter() - t
    print(f"{name}: first build {first:.1f}s, cached build {cached:.1f}s")
    assert (len(data.train), len(data.val), len(data.test)) == sizes
    assert torch.equal(data.val.images, again.val.images)


@pytest.mark.skipif(not DEBIAN_ROOT.is_dir(),
                    reason=f"{DEBIAN_ROOT} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist():
    data = build_dataset("fashion-mnist", "/nonexistent", limit_per_class=50)  # falls back to Debian's copy
    assert data.num_classes == 10 and data.classes[0] == "T-shirt/top" and data.image_size == (28, 28)
    assert (len(data.train), len(data.val), len(data.test)) == (450, 50, 500)
    img = data.train.images[0]
    assert img.shape == (3, 28, 28) and torch.equal(img[0], img[2])
