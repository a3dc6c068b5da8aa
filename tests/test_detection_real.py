"""Real runs on tiny-imagenet-det (Tiny-ImageNet photos and boxes from ../shared): training raises AP50,
and the detection demo prints its table. Slow (minutes on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shared_data import extracted

from kdlab.config import Config, from_dict
from kdlab.demo_detection import DETECTOR_KW, run_detection_demo
from kdlab.engine.detection_eval import evaluate_detection
from kdlab.evaluation import evaluate_checkpoint
from kdlab.experiment import build_experiment, run_experiment

pytestmark = [pytest.mark.slow, pytest.mark.shared, pytest.mark.usefixtures("no_fsync")]


def test_a_short_real_run_raises_ap50_above_the_untrained_students(tmp_path):
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    cfg = from_dict(Config, {
        "name": "mv2", "out_dir": str(tmp_path),
        "data": {"dataset": "tiny-imagenet-det10", "root": str(root), "limit_per_class": 40, "image_size": 64,
                 "batch_size": 8, "eval_batch_size": 16, "num_workers": 0, "val_fraction": 0.1},
        "student": {"name": "fasterrcnn_mobilenetv2_fpn", "kwargs": DETECTOR_KW},
        "method": {"name": "det_plain"}, "optim": {"lr": 0.02, "weight_decay": 1e-4},
        "schedule": {"name": "constant", "epochs": 2},
        "train": {"device": "cpu", "amp": "off", "channels_last": "off", "progress": False, "tensorboard": False,
                  "test_at_end": False}})
    exp = build_experiment(cfg)  # the same seed builds the same untrained student as the run below
    untrained = evaluate_detection(exp.distiller.student, exp.val_loader)
    summary = run_experiment(cfg)
    trained = evaluate_checkpoint(summary["run_dir"], split="val")
    assert trained["n"] == untrained["n"] == 40
    assert trained["AP50"] > untrained["AP50"] + 1.0, (untrained, trained)


def test_detection_demo_trains_its_runs_and_prints_the_ap_table(tmp_path, capsys):
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    torch.manual_seed(0)
    rows = run_detection_demo(str(root), epochs=1, out_dir=str(tmp_path), per_class=10, full=True)
    out = capsys.readouterr().out
    runs = ["teacher", "student", "dkd", "review_dkd"]
    assert [r["run"] for r in rows] == runs
    lines = [line.split() for line in out.splitlines() if line.split()[:1] in [[r] for r in runs]]
    assert [x[0] for x in lines] == runs
    assert [r["epochs"] for r in rows] == [2, 1, 1, 1]  # the teacher trains twice as long
    for r, line in zip(rows, lines):
        assert all(0.0 <= r[k] <= 100.0 for k in ("val_AP", "val_AP50", "test_AP", "test_AP50"))
        assert line[5:9] == [f"{r[k]:.2f}" for k in ("val_AP", "val_AP50", "test_AP", "test_AP50")]
        assert (Path(r["run_dir"]) / "checkpoints" / "best.pt").is_file()
    assert rows[0]["val_images"] == 10 and rows[0]["test_images"] == 100 and "runs written to" in out
