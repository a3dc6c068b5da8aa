"""SimKD end to end: a tiny run, then its best.pt re-evaluated from disk gives the in-memory accuracy."""

from __future__ import annotations

import pytest
import torch

import kdlab
from kdlab.config import load_config
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.metrics import evaluate
from kdlab.engine.trainer import Trainer
from kdlab.evaluation import evaluate_checkpoint
from kdlab.experiment import build_experiment


def test_simkd_saved_student_evaluates_like_the_trained_one(tmp_path):
    torch.manual_seed(0)
    teacher = kdlab.create_model("resnet14", num_classes=10)
    teacher_path = tmp_path / "teacher.pt"
    torch.save({"model": teacher.state_dict()}, teacher_path)
    cfg = load_config(None, [
        f"out_dir={tmp_path / 'runs'}", "name=simkd", "student.name=resnet8", "teacher.name=resnet14",
        f"teacher.checkpoint={teacher_path}", "method.name=simkd", "method.params.factor=4",
        "data.dataset=digits", "data.root=unused", "data.image_size=16", "data.subset_size=300",
        "data.val_fraction=0.2", "data.batch_size=32", "data.eval_batch_size=64", "data.num_workers=0",
        "data.crop_padding=0", "schedule.name=cosine", "schedule.epochs=1", "train.progress=false",
        "train.tensorboard=false", "optim.lr=0.05",
    ])
    exp = build_experiment(cfg)
    run_dir = exp.run_dir
    Trainer(cfg, exp.distiller, exp.train_loader, exp.val_loader, exp.test_loader, run_dir=run_dir).fit()
    # one epoch: best.pt is the model in memory now
    in_memory = evaluate(exp.distiller.inference_model(), exp.test_loader)
    state = load_checkpoint_file(run_dir / "checkpoints" / "best.pt")
    assert {"classifier.weight", "projector.0.weight", "student.fc.weight"} <= set(state["student"])
    assert "teacher_classifier.weight" in state["distiller"] and "projector.0.weight" in state["distiller"]
    assert torch.equal(state["student"]["classifier.weight"], teacher.fc.weight)  # frozen all along

    from_disk = evaluate_checkpoint(run_dir)
    assert from_disk["n"] == in_memory["n"] > 0
    assert from_disk["top1"] == pytest.approx(in_memory["top1"])
    assert from_disk["loss"] == pytest.approx(in_memory["loss"], rel=1e-5)
    # best.pt's "student" alone rebuilds the deployed model too
    fresh = build_experiment(cfg).distiller.inference_model()
    fresh.load_state_dict(state["student"])
    assert evaluate(fresh, exp.test_loader)["top1"] == pytest.approx(in_memory["top1"])
