"""Detection through the CLI on a generated COCO-2017-layout folder: train a teacher, distill, eval."""

from __future__ import annotations

import json

import pytest
import yaml
from detection_fixtures import box, image, write_coco

from kdlab.cli import main

pytestmark = pytest.mark.usefixtures("no_fsync")

TINY = {"min_size": 40, "max_size": 60, "anchor_sizes": [8, 16, 32, 64, 128], "norm": "bn",
        "representation_size": 64, "roi_sampling_ratio": 1, "box_batch_size_per_image": 16,
        "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 30, "rpn_pre_nms_top_n_test": 100,
        "rpn_post_nms_top_n_test": 30}


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    train = [image(i) for i in range(1, 5)]
    anns = [box(i, i, [5 + i, 4, 20, 25], cat=3 if i % 2 else 7) for i in range(1, 5)]
    folder, ann = write_coco(root, train, anns, name="annotations/instances_train2017.json")
    folder.rename(root / "train2017")
    val_anns = [box(1, 11, [5, 5, 30, 20]), box(2, 12, [1, 2, 10, 10], cat=7)]
    folder, ann = write_coco(root, [image(11), image(12)], val_anns, name="annotations/instances_val2017.json")
    folder.rename(root / "val2017")
    return root


def _config(tmp_path, coco_root, name, method, teacher_ck=None):
    cfg = {"name": name, "out_dir": str(tmp_path / "runs"),
           "data": {"dataset": "coco", "root": str(coco_root), "image_size": 40, "batch_size": 2,
                    "eval_batch_size": 2, "num_workers": 0, "val_fraction": 0.0},
           "student": {"name": "fasterrcnn_mobilenetv2_fpn", "kwargs": dict(TINY)},
           "method": {"name": method}, "optim": {"lr": 0.01, "weight_decay": 1e-4},
           "schedule": {"name": "constant", "epochs": 1},
           "train": {"device": "cpu", "amp": "off", "progress": False, "tensorboard": False, "max_steps": 1}}
    if teacher_ck:
        cfg["teacher"] = {"name": "fasterrcnn_resnet18_fpn", "kwargs": dict(TINY), "checkpoint": teacher_ck}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg))))  # no shared objects: kdlab refuses YAML aliases
    return path


def test_train_distill_and_eval_a_detector_from_the_cli(tmp_path, coco_root, capsys):
    teacher_cfg = _config(tmp_path, coco_root, "teacher", "det_plain")
    assert main(["train", str(teacher_cfg), "student.name=fasterrcnn_resnet18_fpn"]) == 0
    summary = json.loads((tmp_path / "runs" / "teacher" / "summary.json").read_text())
    assert summary["steps"] == 1 and "val_AP" in summary and "test_AP_last" in summary
    ck = tmp_path / "runs" / "teacher" / "checkpoints" / "best.pt"
    student_cfg = _config(tmp_path, coco_root, "dkd", "det_reviewkd_dkd", teacher_ck=str(ck))
    assert main(["train", str(student_cfg), "train.test_at_end=false"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "runs" / "dkd" / "metrics.jsonl").read_text().splitlines()]
    train = next(x for x in lines if x["event"] == "train")
    assert {"reviewkd", "dkd", "loss_classifier", "loss_objectness"} <= set(train)
    val = next(x for x in lines if x["event"] == "eval" and x["split"] == "val")
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(val) and val["n"] == 2
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "dkd"), "--split", "val"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(out)
    assert all(0.0 <= out[k] <= 100.0 for k in ("AP", "AP50", "AP75"))


def test_a_classification_method_on_a_detection_dataset_is_one_line(tmp_path, coco_root, capsys):
    cfg = _config(tmp_path, coco_root, "bad", "kd", teacher_ck=None)
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "method 'kd' is a classification method but 'coco' is a detection dataset" in err
    assert len(err.splitlines()) == 1
