"""The detection demo's plan (runs, schedules, evaluation once at the end), its table and its CLI flag.

The real runs are in test_detection_real.py (slow, needs ../shared); these check what the demo
asks of the trainer without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdlab.cli import main
from kdlab.demo_detection import DetectionDemo, demo_configs, format_table, logged_evals


def test_default_plan_is_teacher_student_dkd_with_the_teacher_trained_twice_as_long(tmp_path):
    cfgs = demo_configs("/data/tiny", tmp_path, DetectionDemo(), seed=3)
    assert list(cfgs) == ["teacher", "student", "dkd"]
    t, s, d = cfgs["teacher"], cfgs["student"], cfgs["dkd"]
    assert t.student.name == "fasterrcnn_resnet18_fpn" and t.method.name == "det_plain"
    assert s.student.name == d.student.name == "fasterrcnn_mobilenetv2_fpn"
    assert (s.method.name, d.method.name) == ("det_plain", "det_dkd")
    assert d.method.params == {"alpha": 1.0, "beta": 2.0, "temperature": 2.0} and s.method.params == {}
    assert (t.schedule.epochs, s.schedule.epochs, d.schedule.epochs) == (6, 3, 3)
    assert d.teacher.name == t.student.name and d.teacher.kwargs == t.student.kwargs
    assert Path(d.teacher.checkpoint) == tmp_path / "teacher" / "checkpoints" / "best.pt"
    for c in cfgs.values():
        assert c.schedule.name == "cosine" and c.schedule.warmup_epochs == 1 and c.optim.lr == 0.02
        assert c.train.eval_every == 0 and c.train.test_at_end  # val once at the end, then test
        assert c.train.seed == 3 and c.data.dataset == "tiny-imagenet-det10" and c.data.limit_per_class == 30
        assert c.data.root == "/data/tiny" and Path(c.out_dir) == tmp_path


def test_full_adds_reviewkd_dkd_and_epochs_scale_both_schedules(tmp_path):
    cfgs = demo_configs("r", tmp_path, DetectionDemo(epochs=1, full=True), seed=0)
    assert list(cfgs) == ["teacher", "student", "dkd", "review_dkd"]
    assert cfgs["review_dkd"].method.name == "det_reviewkd_dkd"
    assert cfgs["review_dkd"].teacher.checkpoint == cfgs["dkd"].teacher.checkpoint
    assert [c.schedule.epochs for c in cfgs.values()] == [2, 1, 1, 1]
    assert all(c.schedule.warmup_epochs == 1 for c in cfgs.values())  # never past the run's epochs


def test_logged_evals_keeps_the_last_eval_of_each_split(tmp_path):
    lines = [{"event": "train", "epoch": 1, "loss": 1.0},
             {"event": "eval", "split": "val", "AP": 1.0, "AP50": 2.0, "n": 3.0},
             {"event": "eval", "split": "val", "AP": 4.0, "AP50": 8.0, "n": 3.0},
             {"event": "eval", "split": "test", "AP": 5.0, "AP50": 9.0, "n": 30.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    evals = logged_evals(tmp_path)
    assert (evals["val"]["AP"], evals["val"]["AP50"]) == (4.0, 8.0)
    assert (evals["test"]["AP"], evals["test"]["n"]) == (5.0, 30.0)


def test_table_prints_one_row_per_run_with_its_numbers():
    row = {"run": "dkd", "model": "mobilenetv2_fpn", "method": "det_dkd", "epochs": 3, "params": 2_500_000,
           "val_AP": 12.345, "val_AP50": 25.0, "test_AP": 4.5, "test_AP50": 11.875, "seconds": 61.4}
    header, rule, line = format_table([row]).splitlines()
    assert header.split()[:4] == ["run", "model", "method", "epochs"] and set(rule) == {"-"}
    assert line.split() == ["dkd", "mobilenetv2_fpn", "det_dkd", "3", "2.50M", "12.35", "25.00", "4.50", "11.88",
                            "61s"]


def test_full_without_the_detection_task_is_one_line(capsys):
    code = main(["demo", "--full"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("kdlab: error: ")
    assert "--full only applies to `kdlab demo --task detection`" in err[0]
