"""COCO-format detection data: boxes follow resize and flip, bad inputs, the real Tiny-ImageNet boxes."""

from __future__ import annotations

import pytest
import torch
from detection_fixtures import box, image, write_coco
from shared_data import extracted

from kdlab.data.coco import CocoSet, detection_transform
from kdlab.data.coco_catalog import build_detection_data
from kdlab.data.coco_loader import DetectionLoader
from kdlab.errors import KdlabError


@pytest.fixture
def fixture(tmp_path):
    anns = [box(1, 1, [10, 5, 20, 15], cat=7), box(2, 2, [0, 0, 30, 40], cat=3), box(3, 2, [50, 30, 30, 30])]
    return write_coco(tmp_path, [image(1), image(2), image(3)], anns)


def test_generated_fixture_loads_with_contiguous_labels_and_xyxy_boxes(fixture):
    ds = CocoSet(*fixture)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 3 and len(ds) == 3
    img, t = ds[0]
    assert img.shape == (3, 40, 60) and img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1
    assert t["boxes"].tolist() == [[10, 5, 30, 20]] and t["labels"].tolist() == [2]  # dog: id 7 -> label 2


def test_flip_and_resize_move_a_known_box(fixture):
    flip = detection_transform(train=True, short_side=80, flip=True)
    ds = CocoSet(*fixture, transform=flip)
    flipped = kept = None
    for seed in range(20):  # p=0.5 per draw: both outcomes occur among 20 seeds
        img, t = ds[(0, seed)]
        assert img.shape == (3, 80, 120)  # short side 40 -> 80, so every coordinate doubles
        if t["boxes"].tolist() == [[2 * (60 - 30), 10, 2 * (60 - 10), 40]]:
            flipped = img
        elif t["boxes"].tolist() == [[20, 10, 60, 40]]:
            kept = img
        else:
            raise AssertionError(t["boxes"])
    assert flipped is not None and kept is not None
    assert torch.allclose(flipped, kept.flip(-1), atol=1e-6)  # the pixels flipped with the box
    again, _ = ds[(0, 3)]
    assert torch.equal(again, ds[(0, 3)][0])  # the flip depends on the seed only


def test_box_outside_image_is_clamped_and_an_empty_one_dropped(tmp_path):
    anns = [box(1, 1, [50, 30, 30, 30]), box(2, 1, [70, 10, 5, 5])]  # partly outside; wholly outside
    ds = CocoSet(*write_coco(tmp_path, [image(1)], anns))
    _, t = ds[0]
    assert t["boxes"].tolist() == [[50, 30, 60, 40]] and t["labels"].tolist() == [1]


def test_image_without_boxes_is_left_out_of_training_but_kept_for_evaluation(fixture):
    assert len(CocoSet(*fixture, drop_empty=True)) == 2
    ev = CocoSet(*fixture)
    _, t = ev[2]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_bad_category_and_missing_file_are_one_line_errors(tmp_path, fixture):
    folder, ann = write_coco(tmp_path / "bad", [image(1)], [box(9, 1, [1, 1, 5, 5], cat=42)])
    with pytest.raises(KdlabError, match=r"annotation 9 \(image 1\) has category_id 42, which is not in its "
                                         r"categories list") as e:
        CocoSet(folder, ann)
    assert "\n" not in str(e.value)
    with pytest.raises(KdlabError, match="annotation file .*nope.json does not exist"):
        CocoSet(fixture[0], tmp_path / "nope.json")


def test_coco_names_its_layout_when_the_root_is_wrong(tmp_path):
    with pytest.raises(KdlabError, match="instances_train2017.json.*val2017"):
        build_detection_data("coco", tmp_path)
    from kdlab.data import build_dataset, list_datasets

    assert {"coco", "tiny-imagenet-det"} <= set(list_datasets())
    with pytest.raises(KdlabError, match="detection dataset"):
        build_dataset("coco", tmp_path)


def test_loader_is_reproducible_per_epoch_and_resumes_mid_epoch(fixture):
    ds = CocoSet(*fixture, transform=detection_transform(True, 40), drop_empty=True)
    loader = DetectionLoader(ds, batch_size=1, train=True, seed=5)
    loader.set_epoch(3)
    full = [(b.targets[0]["image_id"], b.targets[0]["boxes"].tolist()) for b in loader]
    loader.set_epoch(3, start_batch=1)
    rest = [(b.targets[0]["image_id"], b.targets[0]["boxes"].tolist()) for b in loader]
    assert len(loader) == 2 and rest == full[1:]
    workers = DetectionLoader(ds, batch_size=1, train=True, seed=5, num_workers=1)
    workers.set_epoch(3)
    assert [(b.targets[0]["image_id"], b.targets[0]["boxes"].tolist()) for b in workers] == full


@pytest.mark.shared
def test_real_tiny_imagenet_boxes_load_and_follow_the_flip():
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    data = build_detection_data("tiny-imagenet-det10", root, limit_per_class=10, val_fraction=0.2)
    assert data.num_classes == 11 and len(data.train) == 80 and len(data.val) == 20 and len(data.test) == 100
    # n01443537_1.JPEG  14 2 54 49 (inclusive corners) -> COCO [14, 2, 41, 48] -> XYXY [14, 2, 55, 50];
    # short side 64 -> 128 doubles it: [28, 4, 110, 100]; flipped in a 128-wide image: [18, 4, 100, 100]
    i = next(k for k in range(len(data.train))
             if data.train.coco.imgs[data.train.ids[k]]["file_name"].endswith("/n01443537_1.JPEG"))
    seen = set()
    for seed in range(12):
        img, t = data.train[(i, seed)]
        assert img.shape == (3, 128, 128) and t["labels"].tolist() == [1]
        seen.add(tuple(t["boxes"][0].tolist()))
    assert seen == {(28.0, 4.0, 110.0, 100.0), (18.0, 4.0, 100.0, 100.0)}


def test_labels_can_be_the_category_ids_as_torchvisions_coco_detectors(fixture):
    ds = CocoSet(*fixture, label_by_id=True)
    assert ds.num_classes == 8 and ds.classes[2] == "cat" and ds.classes[0] == "N/A"
    assert ds[0][1]["labels"].tolist() == [7] and ds.cat_ids[7 - 1] == 7
