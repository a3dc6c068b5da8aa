"""Detection distillation on 2 processes (torchrun, gloo, CPU) on a generated COCO-2017-layout folder.

A det_dkd run (MobileNetV2-FPN student, ResNet18-FPN teacher, tiny sizes) under ``kdlab train
--nproc 2``: it finishes, only rank 0 wrote (the same files and log records as a 1-process run),
the val AP it reports equals a 1-process ``kdlab eval`` of its best.pt, and it is reproducible:
a second 2-process run stopped mid-epoch and resumed on 2 processes ends with the same weights.
torchvision's RPN/ROI samplers draw from each process's global RNG, so a 2-process run is not the
1-process run (docs/distributed.md); each rank's RNG states are in last.pt. Slow: 3 torchrun launches.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from detection_fixtures import box, image, write_coco
from test_distributed import env, last_state, max_diff

from kdlab.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_fsync")]

ROOT = Path(__file__).resolve().parents[1]
TINY = {"min_size": 40, "max_size": 60, "anchor_sizes": [8, 16, 32, 64, 128], "norm": "bn",
        "representation_size": 64, "roi_sampling_ratio": 1, "box_batch_size_per_image": 16,
        "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 30, "rpn_pre_nms_top_n_test": 100,
        "rpn_post_nms_top_n_test": 30}


def coco_folder(root: Path) -> Path:
    """8 training and 5 validation images (COCO 2017 layout), one box each, two categories."""
    (root / "annotations").mkdir(parents=True)
    anns = [box(i, i, [5 + i, 4, 20, 25], cat=3 if i % 2 else 7) for i in range(1, 9)]
    folder, _ = write_coco(root, [image(i) for i in range(1, 9)], anns, name="annotations/instances_train2017.json")
    folder.rename(root / "train2017")
    anns = [box(i, i, [2 + i, 5, 30, 20], cat=3 if i % 2 else 7) for i in range(11, 16)]
    folder, _ = write_coco(root, [image(i) for i in range(11, 16)], anns, name="annotations/instances_val2017.json")
    folder.rename(root / "val2017")
    return root


def write_cfg(tmp: Path, name: str, method: str, teacher: Path | None = None) -> Path:
    cfg = {"name": name, "out_dir": str(tmp / "runs"),
           "data": {"dataset": "coco", "root": str(tmp / "coco"), "image_size": 40, "batch_size": 4,
                    "eval_batch_size": 4, "num_workers": 0, "val_fraction": 0.0},
           "student": {"name": "fasterrcnn_mobilenetv2_fpn", "kwargs": dict(TINY)},
           "method": {"name": method}, "optim": {"lr": 0.01, "weight_decay": 1e-4},
           "schedule": {"name": "constant", "epochs": 2},
           "train": {"device": "cpu", "amp": "off", "progress": False, "tensorboard": False, "deterministic": True}}
    if teacher is not None:
        cfg["teacher"] = {"name": "fasterrcnn_resnet18_fpn", "kwargs": dict(TINY), "checkpoint": str(teacher)}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg))))  # no YAML aliases
    return path


def kdlab_nproc2(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "kdlab", "train", *args, "--nproc", "2"]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300, cwd=ROOT)


def files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_det_dkd_on_two_processes_writes_once_reports_the_eval_ap_and_resumes_exactly(tmp_path, capsys):
    coco_folder(tmp_path / "coco")
    teacher = write_cfg(tmp_path, "teacher", "det_plain")
    assert main(["train", str(teacher), "student.name=fasterrcnn_resnet18_fpn", "train.max_steps=2"]) == 0
    best_teacher = tmp_path / "runs" / "teacher" / "checkpoints" / "best.pt"
    cfg = write_cfg(tmp_path, "dkd", "det_dkd", best_teacher)
    assert main(["train", str(cfg), "name=dkd1"]) == 0  # the 1-process run: what a run folder holds

    two = kdlab_nproc2(str(cfg), "name=dkd2")
    assert two.returncode == 0, two.stderr[-3000:]
    run, one = tmp_path / "runs" / "dkd2", tmp_path / "runs" / "dkd1"
    assert files(run) == files(one)  # rank 0 alone wrote: the same files ...
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len((one / "metrics.jsonl").read_text().splitlines())  # ... and the same records
    assert {"dkd", "loss_classifier"} <= set(next(x for x in lines if x["event"] == "train"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["epochs_run"] == 2 and summary["test_images"] == 5

    capsys.readouterr()
    assert main(["eval", str(run), "--split", "val"]) == 0  # one process, the 4-image eval batches unsplit
    alone = json.loads(capsys.readouterr().out)
    assert alone["n"] == 5
    assert summary["val_AP"] == pytest.approx(alone["AP"], abs=1e-9)  # gathered, scored once, broadcast
    best = next(x for x in lines if x["event"] == "eval" and x["split"] == "val" and x["best"]
                and x["epoch"] == summary["best_epoch"])
    keys = ("AP50", "AP75", "APs")
    assert {k: best[k] for k in keys} == pytest.approx({k: alone[k] for k in keys})

    # reproducible: the same run stopped after 3 of its 4 steps and resumed on 2 processes ends identically
    part = kdlab_nproc2(str(cfg), "name=dkd3", "train.max_steps=3")
    assert part.returncode == 0, part.stderr[-3000:]
    ck = torch.load(tmp_path / "runs" / "dkd3" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["global_step"]) == (2, 1, 3) and len(ck["rng_ranks"]) == 2
    rest = kdlab_nproc2(str(cfg), "name=dkd3", "--resume")
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert max_diff(last_state(tmp_path / "runs" / "dkd3"), last_state(run)) == 0.0
