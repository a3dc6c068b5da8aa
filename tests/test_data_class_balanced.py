"""Class-balanced training batches (data.per_class, Comparative KD's RKD sampler)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from kdlab.data import TensorImageSet
from kdlab.data.class_balanced import class_balanced_order
from kdlab.data.loader import build_loader
from kdlab.errors import KdlabError


def _set(n=120, classes=12, size=8):
    g = torch.Generator().manual_seed(0)
    return TensorImageSet(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                          torch.arange(n) % classes)


def _loader(images, **kw):
    args = dict(batch_size=20, train=True, device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3, crop_padding=0,
                seed=3, with_index=True, per_class=5)
    return build_loader(images, **{**args, **kw})


def test_each_batch_holds_per_class_images_of_distinct_classes():
    targets = torch.arange(100) % 10
    order = class_balanced_order(targets, [20, 20, 15], 5, torch.Generator().manual_seed(1))
    assert order.shape == (55,)
    for lo, hi in ((0, 20), (20, 40), (40, 55)):
        batch = order[lo:hi]
        assert len(set(batch.tolist())) == hi - lo  # no image twice in a batch
        counts = Counter(targets[batch].tolist())
        assert all(v == 5 for v in list(counts.values())[: (hi - lo) // 5])
    again = class_balanced_order(targets, [20, 20, 15], 5, torch.Generator().manual_seed(1))
    assert torch.equal(order, again)


def test_a_small_class_gives_all_its_images():
    targets = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    order = class_balanced_order(targets, [9], 4, torch.Generator().manual_seed(0))
    counts = Counter(targets[order].tolist())
    assert sum(counts.values()) == 9 and counts.get(0, 0) <= 2 and max(counts.values()) <= 4


def test_the_loader_serves_class_balanced_batches_reproducibly():
    images = _set()
    loader = _loader(images)
    batches = list(loader)
    assert len(batches) == 6  # 120 / 20, as with plain shuffling
    for b in batches:
        counts = Counter(b.target.tolist())
        assert len(counts) == 4 and set(counts.values()) == {5}
        assert torch.equal(images.targets[b.index], b.target)
    loader.set_epoch(1, start_batch=3)  # a resumed epoch continues with the same batches
    assert [b.index.tolist() for b in loader] == [b.index.tolist() for b in batches[3:]]
    plain = _loader(images, per_class=0)
    assert any(len(Counter(b.target.tolist())) > 4 for b in plain)
    evaluation = _loader(images, train=False)  # eval loaders ignore it
    assert torch.equal(torch.cat([b.target for b in evaluation]), images.targets)


def test_too_few_classes_for_the_batch_is_one_line():
    with pytest.raises(KdlabError, match="12 classes cannot fill a batch of 64"):
        _loader(_set(), batch_size=64, per_class=5)


def test_data_per_class_reaches_the_training_loader_of_a_run(tmp_path):
    from kdlab.config import load_config
    from kdlab.experiment import build_experiment

    cfg = load_config(None, ["data.dataset=digits", "data.image_size=16", "data.batch_size=20", "data.per_class=5",
                             "student.name=resnet8", "train.device=cpu", f"out_dir={tmp_path}"])
    exp = build_experiment(cfg)
    batch = next(iter(exp.train_loader))
    assert set(Counter(batch.target.tolist()).values()) == {5}
    assert exp.val_loader.per_class == 0
