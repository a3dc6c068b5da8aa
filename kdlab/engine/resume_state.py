"""What ``last.pt`` holds and how a trainer is put back from it (exact resume).

``last.pt`` holds everything needed to continue bit-exactly: weights (teacher excluded), optimizer,
scheduler, RNG states (every rank's under DDP), the position ``(epoch, batch_in_epoch,
global_step)``, the best metric, the running epoch meter, early-stopping counters, the BN buffers
of a train-mode teacher and the config.
:class:`~kdlab.engine.run_folder.RunFolder` adds the metrics log's length and the pending best.
Everything is a tensor, number, string or container, so the file loads with ``weights_only=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdlab.engine import distributed
from kdlab.engine.rng import capture_rng_state
from kdlab.errors import KdlabError

if TYPE_CHECKING:
    from kdlab.engine.trainer import Trainer

CHECKPOINT_FORMAT = 1


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def teacher_buffers(trainer: Trainer, load: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """A teacher run in train mode updates its BN statistics: those buffers (never its weights) go into
    last.pt so that resuming stays exact. Empty for eval-mode teachers."""
    teacher = trainer.distiller.teacher
    if teacher is None or trainer.distiller.teacher_mode != "train":
        return {}
    buffers = dict(teacher.named_buffers())
    if load is not None:
        with torch.no_grad():
            for k, v in load.items():
                buffers[k].copy_(v)
    return {k: v.detach().clone() for k, v in buffers.items()}


def rank_rng(ck: dict[str, Any]) -> dict[str, Any]:
    """The RNG states this process resumes with: its own rank's when ``ck`` was written by as many
    processes (``rng_ranks``), else rank 0's (``rng``; a run resumed on another number of processes)."""
    ranks = ck.get("rng_ranks") or []
    return ranks[distributed.rank()] if len(ranks) == distributed.world_size() > 1 else ck["rng"]


def capture(trainer: Trainer, wall_s: float) -> dict[str, Any]:
    """The resume state of ``trainer`` now (a collective under DDP: every rank's RNG states go to rank 0)."""
    t = trainer
    rng = capture_rng_state()
    # ranks draw different amounts from their global RNG (detection: torchvision's RPN/ROI samplers
    # draw per proposal), so each rank's states are kept for a resume on the same number of processes
    ranks = distributed.gather_objects(rng) if distributed.active() else None
    return {
        "format": CHECKPOINT_FORMAT,
        "distiller": t.distiller.state_dict_without_teacher(),
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "rng": rng,
        "rng_ranks": ranks or [],
        "epoch": t.epoch,
        "batch_in_epoch": t.batch_in_epoch,
        "global_step": t.global_step,
        "steps_per_epoch": t.steps_per_epoch,
        "best": dict(t.best),
        "last_val": t.last_val,
        "epochs_run": t.epochs_run,
        "meter": t.meter.state_dict(),
        "images_seen": t.images_seen,
        "train_seconds": t.train_seconds,
        "wall_s": wall_s,
        "early_stop": dict(t.early_stop),
        "stop_reason": t.stop_reason,
        "teacher_buffers": teacher_buffers(t),
        "config": t.cfg.to_dict(),
    }


def restore(trainer: Trainer, ck: dict[str, Any], path: Any) -> str:
    """Put ``trainer`` back to the state in ``ck`` (read from ``path``); return the resume notice."""
    t = trainer
    if ck.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ck:
        raise KdlabError(f"{path} is not a kdlab resume checkpoint")
    if ck["steps_per_epoch"] != t.steps_per_epoch:
        raise KdlabError(f"cannot resume exactly: {path} was written with {ck['steps_per_epoch']} batches per "
                         f"epoch, this run has {t.steps_per_epoch} (the same data and batch size are needed)")
    t.distiller.load_state_dict_without_teacher(ck["distiller"])
    try:
        t.optimizer.load_state_dict(ck["optimizer"])
    except (ValueError, KeyError) as e:
        raise KdlabError(f"optimizer state in {path} does not fit this run ({e})") from None
    t.scheduler.load_state_dict(ck["scheduler"])
    t.epoch, t.batch_in_epoch = ck["epoch"], ck["batch_in_epoch"]
    t.global_step = ck["global_step"]
    t.best = dict(ck["best"])
    t.last_val = ck.get("last_val")
    t.epochs_run = ck["epochs_run"]
    t.images_seen, t.train_seconds = ck["images_seen"], ck["train_seconds"]
    t.wall_before = ck["wall_s"]
    t.early_stop = dict(ck.get("early_stop", t.early_stop))
    t.stop_reason = ck.get("stop_reason")
    if t.batch_in_epoch > 0:
        t.meter.load_state_dict(ck["meter"])
    if ck.get("teacher_buffers"):
        teacher_buffers(t, ck["teacher_buffers"])
    old, new = flatten(ck.get("config", {})), flatten(t.cfg.to_dict())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    where = f"epoch {t.epoch}, batch {t.batch_in_epoch}/{t.steps_per_epoch}, step {t.global_step}"
    return (f"resume: continuing from {path} at {where}"
            + (f"; config changed: {', '.join(changed)}" if changed else ""))
