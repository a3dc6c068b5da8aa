"""CompKD's tuple sampler and tuple loader: sizes, P/Q split, distinctness, determinism, exact resume."""

import math

import numpy as np
import pytest
import torch

from kdlab.data import TensorImageSet
from kdlab.data.tuples import TupleLoader, sample_tuples, tuple_split
from kdlab.errors import KdlabError


def test_split_is_q_floor_half():
    assert tuple_split(2) == (1, 1) and tuple_split(3) == (2, 1)
    with pytest.raises(KdlabError, match="2 or 3"):
        tuple_split(4)


def _canonical_ok(t: np.ndarray, pos: int) -> None:
    assert (np.diff(t[:, :pos], axis=1) > 0).all() and (np.diff(t[:, pos:], axis=1) > 0).all()
    assert all(len(set(row)) == t.shape[1] for row in t.tolist())  # k different images per tuple


@pytest.mark.parametrize("n,pos,neg,max_tuples", [(500, 2, 1, 3000), (300, 1, 1, 2000)])
def test_sparse_sampling(n, pos, neg, max_tuples):
    t = sample_tuples(n, pos, neg, max_tuples, seed=4)
    assert t.shape == (max_tuples, pos + neg) and t.dtype == np.int64
    assert t.min() >= 0 and t.max() < n
    _canonical_ok(t, pos)
    assert len({tuple(r) for r in t.tolist()}) == max_tuples  # distinct
    assert np.array_equal(t, sample_tuples(n, pos, neg, max_tuples, seed=4))  # deterministic
    assert not np.array_equal(t, sample_tuples(n, pos, neg, max_tuples, seed=5))


def test_dense_enumerates_everything_or_samples():
    full = sample_tuples(6, 2, 1, 1000)  # C(6,2)·C(4,1) = 60 < 5·1000: all of them
    assert len(full) == math.comb(6, 2) * 4 == 60
    _canonical_ok(full, 2)
    assert len({tuple(r) for r in full.tolist()}) == 60
    pairs = sample_tuples(5, 1, 1, 1000)  # ordered pairs: (a, b) and (b, a) are different tuples
    assert len(pairs) == 20 and {(0, 1), (1, 0)} <= {tuple(r) for r in pairs.tolist()}
    some = sample_tuples(6, 2, 1, 25, seed=1)  # 60 possible, 60 < 5·25: 25 of them at random
    assert len(some) == 25 and {tuple(r) for r in some.tolist()} <= {tuple(r) for r in full.tolist()}
    assert np.array_equal(some, sample_tuples(6, 2, 1, 25, seed=1))
    with pytest.raises(KdlabError):
        sample_tuples(2, 2, 1)


def _images(n=40, size=8, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return TensorImageSet(x, torch.arange(n) % classes)


def _loader(images, **kw):
    args = dict(pos_and_neg=3, max_tuples=50, batch_size=4, seed=7, mean=(0.5,) * 3, std=(0.25,) * 3,
                crop_padding=2)
    args.update(kw)
    return TupleLoader(images, **args)


def test_loader_batches():
    images = _images()
    loader = _loader(images)
    assert len(loader) == 10 and loader.tuples.shape == (50, 3)  # ⌈40 / 4⌉ steps: CompKD's simulated epoch
    batches = list(loader)
    assert len(batches) == 10
    b = batches[0]
    assert b.image.shape == (12, 3, 8, 8) and b.target.shape == (12,) and b.index.shape == (12,)
    assert b.extra["tuple_split"].tolist() == [2, 1] and b.extra["tuples"].shape == (4, 3)
    assert torch.equal(b.index, b.extra["tuples"].reshape(-1))  # tuple-major flattening
    assert torch.equal(b.target, images.targets[b.index])
    # the stream walks through permutations of the pool: 10 batches × 4 = 40 of the 50 tuples, no repeat
    served = torch.cat([x.extra["tuples"] for x in batches])
    assert len({tuple(r) for r in served.tolist()}) == 40
    assert {tuple(r) for r in served.tolist()} <= {tuple(r) for r in loader.tuples.tolist()}
    # epoch 2 finishes pass 0 (10 tuples) and starts pass 1: every tuple of the pool once in 50
    second = torch.cat([x.extra["tuples"] for x in loader])
    assert len({tuple(r) for r in torch.cat([served, second[:10]]).tolist()}) == 50


def test_fresh_augmentation_per_image():
    images = _images(n=6)
    loader = _loader(images, pos_and_neg=2, max_tuples=30, batch_size=30, crop_padding=2)
    b = next(iter(loader))
    clean = _loader(images, pos_and_neg=2, max_tuples=30, batch_size=30, crop_padding=0, flip=False)
    c = next(iter(clean))
    assert not torch.allclose(b.image, c.image)
    # the same image appears several times in a batch with different crops
    first = (b.index == 0).nonzero().flatten()
    assert len(first) > 2 and any(not torch.equal(b.image[first[0]], b.image[i]) for i in first[1:])


def test_loader_is_deterministic_and_resumes_exactly():
    images = _images()
    a = _loader(images)
    a.set_epoch(3)
    ref = list(a)
    b = _loader(images)
    b.set_epoch(3, start_batch=6)
    rest = list(b)
    assert len(rest) == 4
    for x, y in zip(ref[6:], rest):
        assert torch.equal(x.image, y.image) and torch.equal(x.index, y.index)
    other = _loader(images, seed=8)
    other.set_epoch(3)
    assert not torch.equal(next(iter(other)).index, ref[0].index)


def test_loader_needs_tensor_images(tmp_path):
    from kdlab.data import FileImageSet
    files = FileImageSet(("a.png", "b.png"), torch.tensor([0, 1]))
    with pytest.raises(KdlabError, match="in_memory"):
        _loader(files)
