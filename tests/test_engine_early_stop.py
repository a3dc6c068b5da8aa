"""Generic early stopping in the Trainer: patience, LR drops from the best weights, exact resume."""

from __future__ import annotations

import pytest
import torch
from test_engine_trainer import CE, NUM_CLASSES, FakeLoader, assert_identical, events, make_cfg, tiny_net, weights

from kdlab.config import ScheduleConfig
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.trainer import Trainer
from kdlab.errors import KdlabError

# val accuracy level per epoch: e1 best, e2-3 worse (plateau -> drop 1 back to e1), e4 best,
# e5-6 worse (plateau -> drop 2 back to e4), e7-8 worse (plateau, no drops left -> stop)
SCRIPT = {1: 0.5, 2: 0.25, 3: 0.25, 4: 0.75, 5: 0.25, 6: 0.25, 7: 0.25, 8: 0.25, 9: 1.0, 10: 1.0}


pytestmark = pytest.mark.usefixtures("no_fsync")


class EpochScriptedVal(FakeLoader):
    """Val labels agree with the model on SCRIPT[epoch] of the images; the epoch is the trainer's."""

    def __init__(self) -> None:
        super().__init__(4, seed=1, train=False)
        self.trainer: Trainer | None = None

    def __iter__(self):
        epoch = self.trainer.epoch - 1  # the trainer moved to the next epoch before validating
        n, done = len(self.targets), 0
        model = self.trainer.distiller.student
        for b in super().__iter__():
            preds = model(b.image).argmax(1)
            agree = (torch.arange(len(preds)) + done) < SCRIPT[epoch] * n
            b.target = torch.where(agree, preds, (preds + 1) % NUM_CLASSES)
            done += len(preds)
            yield b


def es_cfg(**train):
    cfg = make_cfg(early_stop_patience=2, plateau_lr_drops=2, plateau_gamma=0.1, **train)
    cfg.schedule = ScheduleConfig(name="constant", epochs=10)
    return cfg


def fit(tmp_path, name, cfg, distiller, resume=False):
    val = EpochScriptedVal()
    trainer = Trainer(cfg, distiller, FakeLoader(), val, FakeLoader(3, seed=2, train=False),
                      run_dir=tmp_path / name, resume=resume)
    val.trainer = trainer
    return trainer, trainer.fit()


def test_patience_lr_drops_and_best_weight_reloads(tmp_path):
    snapshots = {}

    def record(batch):  # weights at the first step of each epoch, before its update
        if batch.step % 5 == 0:
            snapshots[batch.epoch] = weights(distiller)
            best = tmp_path / "es" / "checkpoints" / "best.pt"
            if best.exists():
                snapshots[f"best{batch.epoch}"] = load_checkpoint_file(best)["distiller"]

    distiller = CE(tiny_net(), on_step=record)
    trainer, summary = fit(tmp_path, "es", es_cfg(), distiller)
    assert summary["stopped_by"] == "early_stop" and summary["epochs_run"] == 8 and summary["steps"] == 40
    assert summary["best_epoch"] == 4 and summary["val_top1"] == 75.0 and summary["plateau_lr_drops"] == 2
    ev = events(tmp_path / "es")
    lrs = {e["epoch"]: e["lr"] for e in ev if e["event"] == "train"}
    assert lrs == pytest.approx({1: 0.1, 2: 0.1, 3: 0.1, 4: 0.01, 5: 0.01, 6: 0.01, 7: 0.001, 8: 0.001})
    plateaus = [(e["epoch"], e["drops"], e["best_epoch"]) for e in ev if e["event"] == "plateau"]
    assert plateaus == [(3, 1, 1), (6, 2, 4)]
    assert [e["epoch"] for e in ev if e["event"] == "early_stop"] == [8]
    # after each plateau training continues from the best weights (best.pt as it was then); the
    # snapshot is taken after the step's forward, so BN running statistics have moved: parameters only
    params = {k for k, _ in distiller.named_parameters()}
    for epoch, best in ((4, "best3"), (7, "best6")):
        assert_identical({k: snapshots[epoch][k] for k in params}, {k: snapshots[best][k] for k in params})
    assert not torch.equal(snapshots[4]["student.0.weight"], snapshots[3]["student.0.weight"])
    assert trainer.early_stop == {"since_best": 2, "drops": 2, "lr_scale": pytest.approx(0.01), "stopped": True}
    assert summary["test_top1_at_best_val"] is not None
    # a resume of a finished early-stopped run trains no further
    _, again = fit(tmp_path, "es", es_cfg(), CE(tiny_net()), resume=True)
    assert again["steps"] == 40 and again["stopped_by"] == "early_stop"


def test_no_drops_means_stop_at_the_first_plateau(tmp_path):
    cfg = es_cfg()
    cfg.train.plateau_lr_drops = 0
    _, summary = fit(tmp_path, "nodrop", cfg, CE(tiny_net()))
    assert summary["stopped_by"] == "early_stop" and summary["epochs_run"] == 3 and summary["best_epoch"] == 1


def test_the_epoch_cap_still_applies(tmp_path):
    cfg = es_cfg()
    cfg.schedule.epochs = 5
    _, summary = fit(tmp_path, "cap", cfg, CE(tiny_net()))
    assert summary["stopped_by"] == "epochs" and summary["epochs_run"] == 5 and summary["plateau_lr_drops"] == 1


def test_resume_mid_plateau_is_exact(tmp_path):
    ref_trainer, ref = fit(tmp_path, "ref", es_cfg(), CE(tiny_net()))
    # step 27 is in epoch 6: last.pt is from the end of epoch 5 (after drop 1, one evaluation without gain)
    with pytest.raises(RuntimeError, match="injected"):
        fit(tmp_path, "cut", es_cfg(), CE(tiny_net(), fail_at_step=27))
    ck = load_checkpoint_file(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert ck["early_stop"] == {"since_best": 1, "drops": 1, "lr_scale": pytest.approx(0.1), "stopped": False}
    resumed = CE(tiny_net(seed=5))
    trainer, summary = fit(tmp_path, "cut", es_cfg(), resumed, resume=True)
    assert_identical(weights(resumed), weights(ref_trainer.distiller))
    for key in ("steps", "epochs_run", "best_epoch", "val_top1", "test_top1_at_best_val", "test_top1_last",
                "stopped_by", "plateau_lr_drops"):
        assert summary[key] == ref[key], key
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(ref_trainer.optimizer.param_groups[0]["lr"])


def test_bad_settings_fail_clearly(tmp_path):
    cfg = es_cfg()
    with pytest.raises(KdlabError, match="validation split"):
        Trainer(cfg, CE(tiny_net()), FakeLoader(), None, run_dir=tmp_path / "a")
    cfg.train.early_stop_patience = 0
    with pytest.raises(KdlabError, match="early_stop_patience"):
        Trainer(cfg, CE(tiny_net()), FakeLoader(), FakeLoader(2), run_dir=tmp_path / "b")
