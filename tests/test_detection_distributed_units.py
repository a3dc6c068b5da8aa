"""Detection under DDP, checked in one process: the sharded DetectionLoader against the unsharded one,
and the evaluation gathered from rank shards against one evaluation of the whole split.

The 2-process runs themselves (torchrun, gloo) are in tests/test_detection_distributed.py (slow).
"""

from __future__ import annotations

import pytest
import torch
from detection_fixtures import TruthDetector, box, image, write_coco
from torch import Tensor

from kdlab.data.coco import CocoSet, detection_transform
from kdlab.data.coco_loader import DetectionLoader
from kdlab.data.sample_rng import sample_seed
from kdlab.engine import detection_eval, distributed
from kdlab.errors import KdlabError


@pytest.fixture(scope="module")
def coco7(tmp_path_factory):
    """7 images, one or two boxes each (two categories), every image a different box."""
    root = tmp_path_factory.mktemp("coco7")
    anns = [box(i, i, [2 + 3 * i, 4, 20, 15 + i], cat=3 if i % 2 else 7) for i in range(1, 8)]
    anns += [box(10 + i, i, [30, 20, 25, 18], cat=7) for i in (2, 5)]
    return write_coco(root, [image(i) for i in range(1, 8)], anns)


def _served(loader) -> list[list[tuple[int, list, Tensor]]]:
    return [[(t["image_id"], t["boxes"].tolist(), im) for im, t in zip(b.images, b.targets)] for b in loader]


@pytest.mark.parametrize("world", [2, 4])
def test_the_ranks_batches_together_are_the_single_process_batches(coco7, world):
    ds = CocoSet(*coco7, transform=detection_transform(train=True, short_side=40), drop_empty=True)
    plain = {t["image_id"]: t["boxes"].tolist() for _, t in CocoSet(*coco7)}
    whole = DetectionLoader(ds, batch_size=4, train=True, seed=4)  # 7 = 4 + 3
    ranks = [DetectionLoader(ds, batch_size=4, train=True, seed=4, shard=(r, world)) for r in range(world)]
    # a last global batch of 3 images feeds 2 ranks, not 4: dropped in training (as the image loaders)
    assert len(whole) == 2 and all(len(r) == (2 if world == 2 else 1) for r in ranks)
    flipped = []
    for epoch, start in [(1, 0), (2, 0), (3, 0), (3, 1)]:
        for loader in (whole, *ranks):
            loader.set_epoch(epoch, start)
        ref = _served(whole)[: len(ranks[0]) - start]
        parts = [_served(r) for r in ranks]
        assert len(ref) == len(ranks[0]) - start and all(len(p) == len(ref) for p in parts)
        for b, batch in enumerate(ref):
            joined = [item for p in parts for item in p[b]]  # rank order = the global batch's order
            assert [len(p[b]) for p in parts] == [len(batch) // world + (r < len(batch) % world) for r in range(world)]
            assert [(i, bx) for i, bx, _ in joined] == [(i, bx) for i, bx, _ in batch]
            assert all(torch.equal(a[2], c[2]) for a, c in zip(joined, batch))  # same pixels: same flips
            flipped += [bx != plain[i] for i, bx, _ in batch]
    assert any(flipped) and not all(flipped)  # the comparison covered flipped and unflipped images


def test_a_flip_is_drawn_from_the_seed_of_seed_epoch_and_index(coco7):
    ds = CocoSet(*coco7, transform=detection_transform(train=True, short_side=40), drop_empty=True)
    loader = DetectionLoader(ds, batch_size=3, train=True, seed=9)
    loader.set_epoch(5)
    served = {t["image_id"]: t["boxes"].tolist() for b in loader for t in b.targets}
    index = {image_id: k for k, image_id in enumerate(ds.ids)}
    assert len(served) == 7  # batch 3: 3 + 3 + 1, nothing dropped in one process
    assert served == {i: ds[(index[i], sample_seed(9, 5, index[i]))][1]["boxes"].tolist() for i in served}


def test_evaluation_shards_cover_the_split_once_and_bad_shards_are_refused(coco7):
    ds = CocoSet(*coco7)
    parts = [DetectionLoader(ds, batch_size=4, train=False, shard=(r, 3)) for r in range(3)]
    ids = [[t["image_id"] for b in p for t in b.targets] for p in parts]
    assert ids == [[1, 2, 5], [3, 6], [4, 7]]  # batches [1-4] and [5-7], each cut in rank order
    assert [len(p) for p in parts] == [2, 2, 2]
    with pytest.raises(KdlabError, match=r"shard must be \(rank, world\)"):
        DetectionLoader(ds, batch_size=4, train=False, shard=(3, 3))


class _Noisy(TruthDetector):
    """Each image's truth, shifted by an amount depending on its position, plus one false positive."""

    def detections(self, k: int, t: dict) -> dict:
        boxes = t["boxes"].as_subclass(torch.Tensor) + torch.tensor([k % 3, 0, k % 3, 2.0 * (k % 2)])
        fp = torch.tensor([[40.0, 2, 58, 12]])
        return {"boxes": torch.cat([boxes, fp]), "labels": torch.cat([t["labels"], torch.tensor([1])]),
                "scores": torch.cat([torch.linspace(0.9, 0.5, len(boxes)) - 0.05 * k, torch.tensor([0.6])])}


def test_detections_gathered_from_two_shards_score_as_one_evaluation(coco7, monkeypatch):
    ds = CocoSet(*coco7)
    model = _Noisy(ds)
    single = detection_eval.evaluate_detection(model, DetectionLoader(ds, batch_size=3, train=False))
    assert 0 < single["AP"] < 100 and single["n"] == 7  # neither trivial nor perfect
    shards = [DetectionLoader(ds, batch_size=3, train=False, shard=(r, 2)) for r in range(2)]
    rank1 = detection_eval.predict_detections(model, shards[1])
    seen: dict = {}

    def gather(obj):  # rank 0's view of the gather: its own detections, then rank 1's
        seen["local"] = obj
        return [obj, rank1]

    monkeypatch.setattr(distributed, "gather_objects", gather)
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: obj)
    gathered = detection_eval.evaluate_detection(model, shards[0])
    assert {d["image_id"] for d in seen["local"]}.isdisjoint({d["image_id"] for d in rank1})
    assert {d["image_id"] for d in seen["local"] + rank1} == set(ds.ids)
    assert gathered == single
    # a rank other than 0 gets None from the gather and returns rank 0's broadcast metrics
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: None)
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: (single, None) if obj == (None, None) else obj)
    assert detection_eval.evaluate_detection(model, shards[1]) == single


def test_a_pass_leaves_the_global_rng_alone(coco7):
    """The detector's RPN/ROI samplers draw from the global RNG: serving batches (a training epoch, an
    evaluation, a resumed epoch) must not move it, or a resumed run would sample other proposals."""
    state = torch.get_rng_state()
    for train in (True, False):
        ds = CocoSet(*coco7, transform=detection_transform(train=train, short_side=40), drop_empty=train)
        assert sum(len(b) for b in DetectionLoader(ds, batch_size=3, train=train, seed=1)) == 7
    assert torch.equal(torch.get_rng_state(), state)


def test_a_scoring_failure_on_rank_0_reaches_every_rank_as_one_line(coco7, monkeypatch):
    ds = CocoSet(*coco7)
    shard = DetectionLoader(ds, batch_size=4, train=False, shard=(1, 2))
    sent: list = []
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: [obj, []])  # rank 0's view

    def broken(dataset, dets):
        raise ValueError("bad\nresult file")

    monkeypatch.setattr(detection_eval, "score_detections", broken)
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: sent.append(obj) or obj)
    with pytest.raises(ValueError, match="bad"):  # rank 0 tells the others, then fails with its own error
        detection_eval.evaluate_detection(_Noisy(ds), shard)
    assert sent == [(None, "ValueError: bad")]
    monkeypatch.setattr(distributed, "gather_objects", lambda obj: None)  # a rank waiting for rank 0
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: sent[0])
    with pytest.raises(KdlabError, match=r"^rank 0 could not score the gathered detections: ValueError: bad$"):
        detection_eval.evaluate_detection(_Noisy(ds), shard)


def test_a_rank_resumes_with_its_own_rng_states_on_the_same_number_of_processes(monkeypatch):
    from kdlab.engine.resume_state import rank_rng

    ck = {"rng": "rank 0", "rng_ranks": ["rank 0", "rank 1"]}
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert rank_rng(ck) == "rank 1"
    monkeypatch.setattr(distributed, "world_size", lambda: 3)  # another world size: rank 0's states
    assert rank_rng(ck) == "rank 0" and rank_rng({"rng": "old file"}) == "old file"
