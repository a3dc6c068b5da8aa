"""SimKD end to end: a tiny run, then its best.pt re-evaluated from disk gives the in-memory accuracy,
also once the teacher's checkpoint file is gone and when the best.pt file is named alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdlab.config import load_config
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.metrics import evaluate
from kdlab.engine.trainer import Trainer
from kdlab.evaluation import evaluate_checkpoint
from kdlab.experiment import build_experiment

DIGITS = ["data.dataset=digits", "data.root=unused", "data.image_size=16", "data.subset_size=300",
          "data.val_fraction=0.2", "data.batch_size=32", "data.eval_batch_size=64", "data.num_workers=0",
          "data.crop_padding=0", "train.progress=false", "train.tensorboard=false"]


def _trained_teacher(tmp_path) -> tuple[torch.nn.Module, str]:
    """A resnet14 trained 5 epochs on digits: its classifier is worth reusing."""
    cfg = load_config(None, [f"out_dir={tmp_path / 'runs'}", "name=teacher", "student.name=resnet14",
                             "method.name=ce", "schedule.name=cosine", "schedule.epochs=5", "optim.lr=0.1",
                             *DIGITS])
    exp = build_experiment(cfg)
    summary = Trainer(cfg, exp.distiller, exp.train_loader, exp.val_loader, exp.test_loader,
                      run_dir=exp.run_dir).fit()
    assert summary["val_top1"] > 50  # 10 classes: chance is 10
    return exp.distiller.student, str(exp.run_dir / "checkpoints" / "best.pt")


def test_simkd_saved_student_evaluates_like_the_trained_one(tmp_path):
    torch.manual_seed(0)
    teacher, teacher_path = _trained_teacher(tmp_path)
    cfg = load_config(None, [
        f"out_dir={tmp_path / 'runs'}", "name=simkd", "student.name=resnet8", "teacher.name=resnet14",
        f"teacher.checkpoint={teacher_path}", "method.name=simkd", "method.params.factor=4",
        "schedule.name=cosine", "schedule.epochs=6", "optim.lr=0.05", *DIGITS,  # 4 epochs sit at ~20%
    ])
    exp = build_experiment(cfg)
    run_dir = exp.run_dir
    summary = Trainer(cfg, exp.distiller, exp.train_loader, exp.val_loader, exp.test_loader, run_dir=run_dir).fit()
    state = load_checkpoint_file(run_dir / "checkpoints" / "best.pt")
    assert {"classifier.weight", "projector.0.weight", "student.fc.weight"} <= set(state["student"])
    assert "teacher_classifier.weight" in state["distiller"] and "projector.0.weight" in state["distiller"]
    assert torch.equal(state["student"]["classifier.weight"], teacher.fc.weight)  # frozen all along
    # best.pt's "student" alone rebuilds the deployed model: the trainer's test number at the best epoch
    deployed = build_experiment(cfg).distiller.inference_model()
    deployed.load_state_dict(state["student"])
    reference = evaluate(deployed, exp.test_loader)
    assert reference["top1"] == pytest.approx(summary["test_top1_at_best_val"])
    assert reference["top1"] > 20  # the reused classifier works: chance is 10

    Path(teacher_path).unlink()  # evaluation needs no teacher weights: the run's state holds the classifier
    from_disk = evaluate_checkpoint(run_dir)
    assert from_disk["n"] == reference["n"] > 0
    assert from_disk["top1"] == pytest.approx(reference["top1"])
    assert from_disk["loss"] == pytest.approx(reference["loss"], rel=1e-5)  # both fp32
    alone = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt")  # the file's own config rebuilds SimKD
    assert (alone["n"], alone["top1"]) == (from_disk["n"], from_disk["top1"])
    assert alone["loss"] == pytest.approx(from_disk["loss"], rel=1e-6)
