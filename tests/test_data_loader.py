"""Tensor loaders: batched crop/flip vs a per-image loop, normalisation, order, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.data import Batch, TensorImageSet, build_loader, build_reference_loader
from kdlab.data.augment import crop_flip

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _set(n: int = 50, h: int = 8, w: int = 8, classes: int = 5) -> TensorImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    return TensorImageSet(images, torch.arange(n) % classes)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _crop_loop(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, p: int) -> torch.Tensor:
    """Reference: one image at a time, with NumPy padding and slicing."""
    out = []
    for img, (top, left), f in zip(images.numpy(), offsets.tolist(), flips.tolist()):
        padded = np.pad(img, ((0, 0), (p, p), (p, p)))
        crop = padded[:, top:top + img.shape[1], left:left + img.shape[2]]
        out.append(crop[:, :, ::-1] if f else crop)
    return torch.from_numpy(np.stack(out).copy())


@pytest.mark.parametrize("p", [0, 1, 4])
def test_batched_crop_matches_per_image_loop(p):
    images = _set(n=32, h=6, w=9).images
    g = torch.Generator().manual_seed(p)
    offsets = torch.randint(0, 2 * p + 1, (32, 2), generator=g)
    flips = torch.rand(32, generator=g) < 0.5
    assert torch.equal(crop_flip(images, offsets, flips, p), _crop_loop(images, offsets, flips, p))


def test_flip_only():
    images = _set(n=4).images
    flips = torch.tensor([True, False, True, False])
    out = crop_flip(images, torch.zeros(4, 2, dtype=torch.long), flips, 0)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def test_eval_loader_order_and_normalisation():
    data = _set(n=50)
    loader = build_loader(data, batch_size=16, train=False, mean=MEAN, std=STD)
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and batches[-1].image.shape[0] == 2
    assert all(isinstance(b, Batch) and b.index is None for b in batches)
    images = torch.cat([b.image for b in batches])
    assert images.dtype == torch.float32
    torch.testing.assert_close(images, _normalise(data.images), atol=1e-5, rtol=0)
    assert torch.equal(torch.cat([b.target for b in batches]), data.targets)


def test_reference_loader_matches_eval_loader():
    data = _set(n=20)
    ref = build_reference_loader(data, batch_size=20, train=False, mean=MEAN, std=STD, num_workers=0)
    x, y = next(iter(ref))
    ours = next(iter(build_loader(data, batch_size=20, train=False, mean=MEAN, std=STD)))
    torch.testing.assert_close(x, ours.image, atol=1e-5, rtol=0)
    assert torch.equal(y, ours.target)
    xt, _ = next(iter(build_reference_loader(data, batch_size=8, train=True, mean=MEAN, std=STD,
                                             num_workers=0)))
    assert xt.shape == (8, 3, 8, 8)


def test_train_loader_shuffles_and_indexes():
    data = _set(n=50)
    loader = build_loader(data, batch_size=16, train=True, mean=MEAN, std=STD, crop_padding=0, flip=False,
                          with_index=True, drop_last=True)
    assert len(loader) == 3
    batches = list(loader)
    index = torch.cat([b.index for b in batches])
    assert len(set(index.tolist())) == 48 and not torch.equal(index, torch.arange(48))
    for b in batches:  # no crop, no flip: each image is its dataset image, normalised
        assert torch.equal(b.target, data.targets[b.index])
        torch.testing.assert_close(b.image, _normalise(data.images[b.index]), atol=1e-5, rtol=0)


def test_train_augmentation_is_the_per_image_crop():
    data = _set(n=24)
    loader = build_loader(data, batch_size=24, train=True, mean=MEAN, std=STD, crop_padding=2,
                          with_index=True)
    loader.set_epoch(7)
    batch = next(iter(loader))
    plan = loader.plan(7)
    expected = _crop_loop(data.images[batch.index], plan.offsets, plan.flips, 2)
    torch.testing.assert_close(batch.image, _normalise(expected), atol=1e-5, rtol=0)
    assert plan.flips.any() and not plan.flips.all() and (plan.offsets != 2).any()


def _epoch(loader, epoch, start=0):
    loader.set_epoch(epoch, start)
    return [(b.image.clone(), b.target.clone(), b.index.clone()) for b in loader]


def test_resume_sees_the_same_batches():
    data = _set(n=70)
    kw = dict(batch_size=8, train=True, mean=MEAN, std=STD, with_index=True, seed=3)
    rng_state = torch.get_rng_state()
    full = build_loader(data, **kw)
    epochs = {e: _epoch(full, e) for e in (1, 2, 3)}
    resumed = build_loader(data, **kw)  # a fresh process would build a fresh loader
    tail = _epoch(resumed, 2, start=5)
    assert len(tail) == len(epochs[2]) - 5
    for (a, ta, ia), (b, tb, ib) in zip(tail, epochs[2][5:]):
        assert torch.equal(a, b) and torch.equal(ta, tb) and torch.equal(ia, ib)
    after = [(b.image, b.target, b.index) for b in resumed]  # no set_epoch: carries on with epoch 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(after, epochs[3]))
    assert not torch.equal(epochs[1][0][2], epochs[2][0][2])  # epochs differ
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG was never used
    other_seed = build_loader(data, **{**kw, "seed": 4})
    assert not torch.equal(_epoch(other_seed, 2)[0][2], epochs[2][0][2])


def test_batch_epoch_and_channels_last():
    data = _set(n=10, h=6, w=6)
    loader = build_loader(data, batch_size=5, train=True, mean=MEAN, std=STD, channels_last=True)
    loader.set_epoch(4)
    b = next(iter(loader))
    assert b.epoch == 4 and b.image.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError):
        loader.set_epoch(1, start_batch=3)


@pytest.mark.parametrize("shape", [(64, 3, 224, 224), (5, 3, 37, 41), (2, 4, 3, 9, 9)])
def test_normalizer_is_addcmul_exactly_in_either_layout(shape) -> None:
    """The row-tiled multiply-add gives addcmul's bits; the output layout is the one asked for."""
    from kdlab.data.augment import Normalizer
    norm = Normalizer(MEAN, STD, torch.device("cpu"))
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ref = torch.addcmul(norm.shift, x.float(), norm.scale)
    assert torch.allclose(ref, _normalise(x), atol=1e-5)  # and that is the formula
    inputs = [x] + ([x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [])
    for images in inputs:
        for cl in (False, True):
            y = norm(images, cl)
            assert torch.equal(y, ref) and y.data_ptr() != images.data_ptr()
            want = torch.channels_last if cl and x.dim() == 4 else torch.contiguous_format
            assert y.is_contiguous(memory_format=want)


def test_normalizer_names_a_channel_mismatch_and_broadcasts_one_channel() -> None:
    from kdlab.data.augment import Normalizer
    x = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    with pytest.raises(ValueError, match="do not have the normalisation's 2 channels"):
        Normalizer((0.5, 0.4), (0.2, 0.3), torch.device("cpu"))(x)
    grey = Normalizer((0.5,), (0.25,), torch.device("cpu"))
    assert torch.equal(grey(x), torch.addcmul(grey.shift, x.float(), grey.scale))
