"""Optimizers and LR schedules: the LR at chosen steps against hand-derived numbers."""

import math

import pytest
import torch

from kdlab.config import OptimConfig, ScheduleConfig
from kdlab.engine.optim import build_optimizer, build_scheduler, lr_factor
from kdlab.errors import KdlabError


def lrs_by_step(sched_cfg, steps_per_epoch, base_lr, n_steps, optim_name="sgd"):
    """The LR each optimizer step 0..n_steps-1 actually runs at (scheduler stepped per step)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(name=optim_name, lr=base_lr))
    sched = build_scheduler(opt, sched_cfg, steps_per_epoch)
    out = []
    for _ in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_multistep_is_reduced_when_the_one_indexed_epoch_exceeds_a_milestone():
    cfg = ScheduleConfig(name="multistep", epochs=240, milestones=[150, 180, 210], gamma=0.1)
    spe = 3
    lrs = lrs_by_step(cfg, spe, 0.05, 240 * spe)
    # epoch e (1-indexed) holds steps (e-1)*spe ... e*spe-1
    assert lrs[0] == pytest.approx(0.05)
    assert lrs[150 * spe - 1] == pytest.approx(0.05)       # last step of epoch 150
    assert lrs[150 * spe] == pytest.approx(0.005)          # first step of epoch 151
    assert lrs[180 * spe - 1] == pytest.approx(0.005)      # epoch 180 still 0.1x
    assert lrs[180 * spe] == pytest.approx(0.0005)         # epoch 181
    assert lrs[210 * spe] == pytest.approx(0.00005)        # epoch 211
    assert lrs[-1] == pytest.approx(0.00005)


def test_linear_warmup_per_step_then_multistep():
    cfg = ScheduleConfig(name="multistep", epochs=10, milestones=[3], gamma=0.5, warmup_epochs=2)
    lrs = lrs_by_step(cfg, 10, 0.1, 100)
    assert lrs[0] == pytest.approx(0.1 * 1 / 20)
    assert lrs[9] == pytest.approx(0.1 * 10 / 20)
    assert lrs[19] == pytest.approx(0.1)        # last warm-up step reaches the base LR
    assert lrs[20] == pytest.approx(0.1)        # epoch 3: not yet > 3
    assert lrs[30] == pytest.approx(0.05)       # epoch 4 > milestone 3


def test_cosine_per_step_to_min_lr():
    cfg = ScheduleConfig(name="cosine", epochs=10, warmup_epochs=0, min_lr=0.001)
    lrs = lrs_by_step(cfg, 10, 0.1, 100)
    assert lrs[0] == pytest.approx(0.1)
    # t/T = 25/100: 0.001 + 0.099 * (1 + cos(pi/4)) / 2
    assert lrs[25] == pytest.approx(0.0855018, abs=1e-6)
    assert lrs[50] == pytest.approx(0.0505)                 # half-way: mean of base and min
    assert lrs[99] == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * 99 / 100)) / 2)
    assert lrs[1] < lrs[0]                                  # changes every step, not every epoch


def test_cosine_after_warmup_starts_at_base_and_spans_the_remaining_epochs():
    cfg = ScheduleConfig(name="cosine", epochs=10, warmup_epochs=2, min_lr=0.0)
    lrs = lrs_by_step(cfg, 10, 0.2, 100)
    assert lrs[0] == pytest.approx(0.2 / 20)
    assert lrs[19] == pytest.approx(0.2)
    assert lrs[20] == pytest.approx(0.2)
    assert lrs[60] == pytest.approx(0.1)        # 40 of the 80 cosine steps
    assert lrs[80] == pytest.approx(0.2 * (1 + math.cos(math.pi * 60 / 80)) / 2)


def test_cosine_epoch_is_constant_within_an_epoch():
    cfg = ScheduleConfig(name="cosine_epoch", epochs=4, min_lr=0.0)
    lrs = lrs_by_step(cfg, 5, 1.0, 20)
    assert lrs[:5] == pytest.approx([1.0] * 5)
    assert lrs[5:10] == pytest.approx([(1 + math.cos(math.pi / 4)) / 2] * 5)
    assert lrs[10] == pytest.approx(0.5)


def test_constant_and_adamw():
    lrs = lrs_by_step(ScheduleConfig(name="constant", epochs=3), 4, 0.01, 12, optim_name="adamw")
    assert lrs == pytest.approx([0.01] * 12)


def test_lr_factor_matches_the_scheduler():
    cfg = ScheduleConfig(name="multistep", epochs=6, milestones=[2, 4], gamma=0.1, warmup_epochs=1)
    lrs = lrs_by_step(cfg, 3, 1.0, 18)
    assert lrs == pytest.approx([lr_factor(s, cfg, 3) for s in range(18)])


def test_scheduler_state_round_trip_continues_the_curve():
    cfg = ScheduleConfig(name="cosine", epochs=5, warmup_epochs=1, min_lr=0.0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(lr=0.1))
    sched = build_scheduler(opt, cfg, 4)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = build_optimizer([p], OptimConfig(lr=0.1))
    sched2 = build_scheduler(opt2, cfg, 4)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_sgd_settings_are_applied():
    p = torch.nn.Parameter(torch.zeros(1))
    cfg = OptimConfig(name="sgd", lr=0.1, momentum=0.8, weight_decay=1e-4, nesterov=True)
    opt = build_optimizer([p], cfg)
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.1, 0.8, 1e-4, True)


def test_unknown_names_suggest_the_nearest():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(KdlabError, match="did you mean 'adamw'"):
        build_optimizer([p], OptimConfig(name="adamww"))
    opt = build_optimizer([p], OptimConfig())
    with pytest.raises(KdlabError, match="did you mean 'cosine'"):
        build_scheduler(opt, ScheduleConfig(name="cosin"), 10)
    with pytest.raises(KdlabError, match="no trainable parameters"):
        build_optimizer([], OptimConfig())
