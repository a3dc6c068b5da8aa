"""Early stopping on the validation split, with LR drops from the best weights (few-sample recipes).

``train.early_stop_patience`` (off by default): an evaluation that does not raise the best val
metric counts towards a plateau; ``patience`` such evaluations in a row make one. On a plateau the
trainer reloads the best weights (the optimizer state, momentum included, is kept), multiplies the
learning rate by ``train.plateau_gamma`` and starts counting again, at most
``train.plateau_lr_drops`` times; the next plateau ends the run (``stopped_by: "early_stop"``).
``schedule.epochs`` stays the cap. The LR drop scales the scheduler's base LRs, so it composes with
any schedule (few-sample recipes use ``constant``). The counters live in ``trainer.early_stop`` and
go into ``last.pt``: a run resumed mid-plateau continues exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.errors import KdlabError

if TYPE_CHECKING:
    from kdlab.engine.trainer import Trainer


def fresh_state() -> dict:
    return {"since_best": 0, "drops": 0, "lr_scale": 1.0, "stopped": False}


def check_settings(trainer: Trainer) -> None:
    """One-line errors for early-stopping settings that cannot work with this run."""
    tc = trainer.cfg.train
    if tc.early_stop_patience is None:
        return
    if tc.early_stop_patience <= 0:
        raise KdlabError(f"train.early_stop_patience must be a positive integer or null, got {tc.early_stop_patience}")
    if tc.plateau_lr_drops < 0 or not 0 < tc.plateau_gamma <= 1:
        raise KdlabError(f"train.plateau_lr_drops must be >= 0 and train.plateau_gamma in (0, 1]; got "
                         f"{tc.plateau_lr_drops} and {tc.plateau_gamma}")
    if trainer.val_loader is None:
        raise KdlabError("train.early_stop_patience needs a validation split; set data.val_fraction > 0")
    if tc.eval_every <= 0:
        raise KdlabError("train.early_stop_patience needs evaluations; set train.eval_every >= 1")


def after_validation(trainer: Trainer, epoch: int, improved: bool) -> None:
    """Count evaluations without improvement; on a plateau drop the LR from the best weights, or stop."""
    t = trainer
    tc, es = t.cfg.train, t.early_stop
    if tc.early_stop_patience is None:
        return
    es["since_best"] = 0 if improved else es["since_best"] + 1
    if es["since_best"] < tc.early_stop_patience:
        return
    if es["drops"] >= tc.plateau_lr_drops:
        es["stopped"] = True
        t.logger.log_event("early_stop", epoch=epoch, step=t.global_step, drops=es["drops"],
                           best_epoch=t.best["epoch"])
        t.logger.info(f"early stop after epoch {epoch}: {es['since_best']} evaluations without "
                      f"improvement, {es['drops']} LR drops done; best epoch {t.best['epoch']}")
        return
    best = load_checkpoint_file(t.folder.best_file())
    t.distiller.load_state_dict_without_teacher(best["distiller"])
    gamma = tc.plateau_gamma
    t.scheduler.base_lrs = [b * gamma for b in t.scheduler.base_lrs]
    for g in t.optimizer.param_groups:
        g["lr"] *= gamma
    es["drops"] += 1
    es["lr_scale"] *= gamma
    es["since_best"] = 0
    t.logger.log_event("plateau", epoch=epoch, step=t.global_step, drops=es["drops"],
                       lr_scale=es["lr_scale"], best_epoch=t.best["epoch"])
    t.logger.info(f"plateau after epoch {epoch}: reloaded the best weights (epoch {t.best['epoch']}), "
                  f"LR x{gamma:g} (drop {es['drops']}/{tc.plateau_lr_drops})")
