"""Trainer callbacks (kdlab.engine.callbacks): each validation and epoch is reported, a stop request ends
the run cleanly with its reason in summary.json, and a run stopped that way resumes as stopped."""

from __future__ import annotations

import json

import pytest
from test_engine_trainer import CE, FakeLoader, make_cfg, tiny_net

from kdlab.config import ScheduleConfig
from kdlab.engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("no_fsync")


class Recorder:
    def __init__(self, stop_at: int | None = None) -> None:
        self.vals: list[tuple[int, float]] = []
        self.epochs: list[int] = []
        self.stop_at = stop_at

    def on_validation(self, epoch, step, metrics):
        self.vals.append((epoch, metrics["top1"]))
        return "pruned" if epoch == self.stop_at else None

    def on_epoch_end(self, epoch, step, train):
        assert "loss" in train and "lr" in train
        self.epochs.append(epoch)


def _fit(tmp_path, cb, epochs=5):
    cfg = make_cfg()
    cfg.schedule = ScheduleConfig(name="constant", epochs=epochs)
    trainer = Trainer(cfg, CE(tiny_net()), FakeLoader(), FakeLoader(4, seed=1, train=False),
                      FakeLoader(3, seed=2, train=False), run_dir=tmp_path / "r", callbacks=[cb])
    return trainer.fit()


def test_every_validation_and_epoch_reported(tmp_path):
    cb = Recorder()
    summary = _fit(tmp_path, cb, epochs=3)
    assert [e for e, _ in cb.vals] == [1, 2, 3] and cb.epochs == [1, 2, 3]
    assert summary["stopped_by"] == "epochs"
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    val_top1 = [r["top1"] for r in logged if r["event"] == "eval" and r["split"] == "val"]
    assert val_top1 == [t for _, t in cb.vals]


def test_stop_request_ends_cleanly_with_its_reason(tmp_path):
    cb = Recorder(stop_at=2)
    summary = _fit(tmp_path, cb)
    assert summary["stopped_by"] == "pruned" and summary["epochs_run"] == 2
    assert cb.epochs == [1, 2]
    assert summary["test_top1_last"] is not None  # the test split is still scored once
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert on_disk["stopped_by"] == "pruned"
