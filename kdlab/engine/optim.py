"""Optimizers and learning-rate schedules, the schedule stepped once per optimizer step.

Schedules (``schedule.name``), all after an optional linear warm-up of ``warmup_epochs``:

* ``multistep`` — ``lr = base * gamma ** #{m in milestones : epoch > m}`` with 1-indexed epochs,
  so with milestones [150, 180, 210] epochs 151-180 run at 0.1x (methods.md §4 item 18).
* ``cosine`` — from ``base`` to ``min_lr`` over the steps after warm-up, updated every step.
* ``cosine_epoch`` — the same curve updated once per epoch (CKD-SW style): constant in an epoch.
* ``constant`` — ``base`` throughout.

Warm-up multiplies the schedule by ``(step + 1) / warmup_steps`` for the first
``warmup_epochs * steps_per_epoch`` steps, reaching the full LR on its last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from kdlab.errors import KdlabError, unknown

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "cosine_epoch", "constant")


def build_optimizer(params: Iterable[nn.Parameter], cfg) -> Optimizer:
    """SGD (momentum, nesterov, weight decay) or AdamW from an :class:`kdlab.config.OptimConfig`."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise KdlabError("the distiller has no trainable parameters to optimize")
    name = cfg.name.strip().lower()
    if name not in OPTIMIZERS:
        raise unknown("optimizer", cfg.name, OPTIMIZERS)
    if cfg.lr <= 0:
        raise KdlabError(f"optim.lr must be positive, got {cfg.lr}")
    if name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise KdlabError("optim.nesterov=true needs optim.momentum > 0")
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg, steps_per_epoch: int, min_lr_ratio: float = 0.0) -> float:
    """The LR multiplier for the optimizer step ``step`` (0-indexed) of a run.

    ``cfg`` is a :class:`kdlab.config.ScheduleConfig`; ``min_lr_ratio`` is ``min_lr / base_lr``
    (cosine schedules only).
    """
    epoch = step // steps_per_epoch + 1  # 1-indexed epoch this step belongs to
    warmup_steps = max(0, cfg.warmup_epochs) * steps_per_epoch
    warm = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    name = cfg.name.strip().lower()
    if name == "multistep":
        main = cfg.gamma ** sum(1 for m in cfg.milestones if epoch > m)
    elif name in ("cosine", "cosine_epoch"):
        if name == "cosine":
            t, total = step - warmup_steps, (cfg.epochs - cfg.warmup_epochs) * steps_per_epoch
        else:
            t, total = epoch - 1 - cfg.warmup_epochs, cfg.epochs - cfg.warmup_epochs
        t = min(max(t, 0), max(total, 1))
        cos = 0.5 * (1.0 + math.cos(math.pi * t / max(total, 1)))
        main = min_lr_ratio + (1.0 - min_lr_ratio) * cos
    elif name == "constant":
        main = 1.0
    else:
        raise unknown("schedule", cfg.name, SCHEDULES)
    return warm * main


def build_scheduler(optimizer: Optimizer, cfg, steps_per_epoch: int) -> LambdaLR:
    """A :class:`LambdaLR` to be stepped after every optimizer step (see the module docstring).

    After ``k`` calls of ``scheduler.step()`` the LR is ``base * lr_factor(k, ...)``: the LR used
    by optimizer step ``k`` (0-indexed). ``min_lr`` is absolute, per parameter group.
    """
    if steps_per_epoch <= 0:
        raise KdlabError("the training loader is empty (0 batches per epoch)")
    if cfg.name.strip().lower() not in SCHEDULES:
        raise unknown("schedule", cfg.name, SCHEDULES)
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs > cfg.epochs:
        raise KdlabError(f"schedule.warmup_epochs={cfg.warmup_epochs} must be in [0, schedule.epochs]")

    def make(base_lr: float) -> Callable[[int], float]:
        ratio = cfg.min_lr / base_lr if base_lr > 0 else 0.0
        return lambda step: lr_factor(step, cfg, steps_per_epoch, ratio)

    return LambdaLR(optimizer, [make(g["lr"]) for g in optimizer.param_groups])
