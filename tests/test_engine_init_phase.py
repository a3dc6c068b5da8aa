"""The generic init phase of two-stage methods (AB/FT/FSP-style): what it trains, and its resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_engine_trainer import assert_identical, events, make_cfg, run, tiny_net, weights
from torch import nn

from kdlab.methods.base import Distiller, Needs

pytestmark = pytest.mark.usefixtures("no_fsync")


class TwoStage(Distiller):
    """Init phase: fit a connector to the student's logits (only the connector trains); main: CE."""

    needs = Needs.of(student={"logits"}, teacher=set())
    uses_teacher = False

    def __init__(self, student, teacher=None, *, init_epochs=2, fail_in_main_at=None):
        super().__init__(student, teacher)
        self.connector = nn.Linear(5, 5)
        self.init_epochs = init_epochs
        self.init_lr = 0.05
        self.fail_in_main_at = fail_in_main_at
        self.phases: list[str] = []

    def init_parameters(self):
        return self.connector.parameters()

    def init_losses(self, s, t, batch):
        self.phases.append("init")
        return {"fit": F.mse_loss(self.connector(s.logits.detach()), torch.ones_like(s.logits))}

    def losses(self, s, t, batch):
        self.phases.append("main")
        if batch.step == self.fail_in_main_at:
            raise RuntimeError("killed")
        return {"ce": F.cross_entropy(s.logits, batch.target)}


def test_init_phase_trains_only_its_parameters_first(tmp_path):
    d = TwoStage(tiny_net(), init_epochs=2)
    student_before = {k: v.clone() for k, v in d.student.state_dict().items() if "num_batches" not in k}
    conn_before = d.connector.weight.detach().clone()
    cfg = make_cfg()
    cfg.schedule.epochs, cfg.schedule.warmup_epochs = 0, 0  # no main phase: only the init phase runs
    trainer, _ = run(tmp_path, "init-only", cfg, d, test=False)
    assert d.phases == ["init"] * (2 * 5)
    assert not torch.equal(d.connector.weight, conn_before)
    for k, v in d.student.state_dict().items():
        if k in student_before and v.is_floating_point() and "running" not in k:
            assert torch.equal(v, student_before[k]), f"student {k} changed in the init phase"
    assert (tmp_path / "init-only" / "checkpoints" / "init.pt").is_file()
    assert [e["epoch"] for e in events(tmp_path / "init-only") if e.get("event") == "init"] == [1, 2]


def test_run_killed_after_the_init_phase_resumes_without_redoing_it(tmp_path):
    cfg = make_cfg()
    ref = TwoStage(tiny_net())
    run(tmp_path, "ref", cfg, ref)
    killed = TwoStage(tiny_net(), fail_in_main_at=0)  # dies on the very first main step, before last.pt
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path, "cut", cfg, killed)
    assert (tmp_path / "cut" / "checkpoints" / "init.pt").is_file()
    resumed = TwoStage(tiny_net(seed=9))  # different init: everything must come from the checkpoint
    run(tmp_path, "cut", cfg, resumed, resume=True)
    assert "init" not in resumed.phases
    assert_identical(weights(resumed), weights(ref))
