"""Tiny real runs on scikit-learn's digits shared by the workflow tests (report, export, eval).

``digits_runs(root)`` trains, once per folder, a resnet14 teacher (ce), a KD student and a SimKD
student (resnet8; projector + the teacher's reused classifier) for a couple of epochs at 16 px.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from kdlab.config import load_config
from kdlab.experiment import run_experiment

DIGITS = ["data.dataset=digits", "data.root=unused", "data.image_size=16", "data.subset_size=300",
          "data.val_fraction=0.2", "data.batch_size=32", "data.eval_batch_size=64", "data.num_workers=0",
          "data.crop_padding=0", "train.progress=false", "train.tensorboard=false", "schedule.name=cosine",
          "optim.lr=0.05"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread, for module-scoped fixtures (conftest's per-test setting comes after them)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def digits_runs(root: Path) -> dict[str, Path]:
    """Run folders ``teacher``, ``kd`` and ``simkd`` under ``root`` (trained on the first call only)."""
    runs = {name: root / name for name in ("teacher", "kd", "simkd")}
    if all((p / "summary.json").is_file() for p in runs.values()):
        return runs
    with one_thread():
        _train(root, runs)
    return runs


def _train(root: Path, runs: dict[str, Path]) -> None:
    common = [f"out_dir={root}", *DIGITS]
    run_experiment(load_config(None, [*common, "name=teacher", "student.name=resnet14", "method.name=ce",
                                      "schedule.epochs=3", "optim.lr=0.1"]), overwrite=True)
    teacher = [f"teacher.checkpoint={runs['teacher'] / 'checkpoints' / 'best.pt'}", "teacher.name=resnet14",
               "student.name=resnet8", "schedule.epochs=2"]
    run_experiment(load_config(None, [*common, *teacher, "name=kd", "method.name=kd"]), overwrite=True)
    run_experiment(load_config(None, [*common, *teacher, "name=simkd", "method.name=simkd",
                                      "method.params.factor=4"]), overwrite=True)
