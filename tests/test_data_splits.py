"""Validation splits, few-sample subsets, class caps, the registry and argument errors."""

from __future__ import annotations

import pytest
import torch

from kdlab.data import DATASETS, build_dataset, list_datasets
from kdlab.data.splits import allocate, first_per_class, stratified_split, stratified_subset
from kdlab.errors import KdlabError

# 3 classes of 50, 20 and 10 images, interleaved
TARGETS = torch.tensor([0, 1, 0, 2] * 10 + [0, 1, 0, 0] * 10)


def test_split_is_stratified_disjoint_and_complete():
    kept, held = stratified_split(TARGETS, 0.2, seed=0)
    assert len(held) == 16 and len(kept) == 64
    assert not set(kept.tolist()) & set(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(TARGETS)))
    assert torch.bincount(TARGETS[held]).tolist() == [10, 4, 2]  # 20 % of 50, 20, 10


def test_split_depends_only_on_seed():
    torch.manual_seed(123)
    a = stratified_split(TARGETS, 0.2, seed=5)
    torch.manual_seed(999)  # the global RNG plays no part
    b = stratified_split(TARGETS, 0.2, seed=5)
    c = stratified_split(TARGETS, 0.2, seed=6)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_allocate_is_exact():
    assert allocate([50, 10, 10], 7).tolist() == [5, 1, 1]
    assert allocate([3, 3, 3], 4).sum() == 4
    assert allocate([1, 1], 0).tolist() == [0, 0]


def test_subset_and_cap():
    sub = stratified_subset(TARGETS, 14, seed=0)
    # quotas 8.75, 3.5, 1.75: largest remainders go to classes 0 and 2
    assert len(sub) == 14 and torch.bincount(TARGETS[sub]).tolist() == [9, 3, 2]
    assert not torch.equal(sub, stratified_subset(TARGETS, 14, seed=1))
    cap = first_per_class(TARGETS, 3)
    assert cap.tolist() == [0, 1, 2, 3, 4, 5, 7, 9, 11]


def test_digits_build():
    data = build_dataset("digits", "unused", val_fraction=0.1, split_seed=0)
    assert data.num_classes == 10 and data.image_size == (8, 8)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.test) == 359  # fixed 20 %, whatever split_seed is
    assert data.train.images.max() == 255 and data.train.images.dtype == torch.uint8
    other = build_dataset("digits", "unused", val_fraction=0.1, split_seed=1)
    assert torch.equal(data.test.images, other.test.images)
    assert not torch.equal(data.val.targets, other.val.targets) or \
        not torch.equal(data.val.images, other.val.images)


def test_digits_upsampled():
    data = build_dataset("digits", "unused", image_size=16, val_fraction=0)
    assert data.val is None and data.image_size == (16, 16)
    assert data.train.images.shape[1:] == (3, 16, 16) and data.test.images.shape[1:] == (3, 16, 16)


def test_subset_before_val_split():
    data = build_dataset("digits", "unused", subset_size=200, val_fraction=0.2, split_seed=2)
    assert (len(data.train), len(data.val)) == (160, 40)
    assert torch.bincount(data.val.targets, minlength=10).tolist() == [4] * 10
    assert "subset of 200" in data.splits_note


def test_limit_per_class():
    data = build_dataset("digits", "unused", limit_per_class=5, val_fraction=0)
    assert torch.bincount(data.train.targets).tolist() == [5] * 10
    assert torch.bincount(data.test.targets).tolist() == [5] * 10


def test_registry_and_unknown_name():
    assert {"cifar10", "cifar100", "imagefolder", "imagenet", "places365", "cifar10-jpeg", "tiny-imagenet",
            "fashion-mnist", "digits"} <= set(list_datasets())
    assert "cifar100" in DATASETS
    with pytest.raises(KdlabError, match="unknown dataset 'cifar1000'; did you mean 'cifar100'"):
        build_dataset("cifar1000", "data")


@pytest.mark.parametrize("kw", [dict(val_fraction=1.0), dict(val_fraction=-0.1), dict(subset_size=0),
                                dict(limit_per_class=-1), dict(subset_size=10**6)])
def test_bad_arguments(kw):
    with pytest.raises(KdlabError):
        build_dataset("digits", "unused", **kw)


def test_uniform_draws_ignore_the_classes():
    targets = torch.tensor([0] * 90 + [1] * 10)
    strat = [int((targets[stratified_subset(targets, 10, seed=s)] == 1).sum()) for s in range(40)]
    assert set(strat) == {1}  # always the class proportion
    uniform = [int((targets[stratified_subset(targets, 10, seed=s, stratify=False)] == 1).sum()) for s in range(40)]
    assert len(set(uniform)) > 2 and 0.5 < sum(uniform) / len(uniform) < 1.5  # hypergeometric, mean 1
    kept, held = stratified_split(targets, 0.2, seed=3, stratify=False)
    assert len(held) == 20 and len(kept) == 80
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(100))


def test_uniform_subset_and_split_through_build_dataset():
    data = build_dataset("digits", "unused", subset_size=200, val_fraction=0.2, split_seed=2, stratify=False)
    assert (len(data.train), len(data.val)) == (160, 40)
    assert torch.bincount(data.val.targets, minlength=10).tolist() != [4] * 10
    assert "uniform subset of 200" in data.splits_note and "uniform random" in data.splits_note
