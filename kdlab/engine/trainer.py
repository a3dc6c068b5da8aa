"""The one training loop every method and task runs through.

:class:`Trainer` drives a :class:`~kdlab.methods.base.Distiller`: per step it sets ``batch.epoch``
(1-indexed) and ``batch.step``, runs ``logits, terms = distiller(batch)`` under the autocast
policy, sums the terms, stops with :class:`TrainingDiverged` on a non-finite loss (before any
update or save), back-propagates, clips, steps the optimizer and then the per-step LR schedule.
A batch is anything with ``.to(device)``, ``len()``, ``.image`` and ``.target`` (a classification
:class:`~kdlab.data.batch.Batch`, a detection batch of image lists); the task's evaluator
(:mod:`kdlab.engine.evaluators`) scores the validation and test splits.

The run's files and their rules (name, lock, resume, overwrite, pending best, metrics cut-back) are
:class:`~kdlab.engine.run_folder.RunFolder`'s; what ``last.pt`` holds is
:mod:`kdlab.engine.resume_state`'s; early stopping is :mod:`kdlab.engine.early_stop`'s; the end of
the run :mod:`kdlab.engine.summary`'s. Resuming calls ``train_loader.set_epoch(epoch, start_batch)``,
so the loader must make each epoch's order and augmentation a function of (seed, epoch) alone.

Multi-process runs (torchrun): :mod:`kdlab.engine.distributed` joins the process group,
:mod:`kdlab.engine.ddp` wraps the distiller (``self.model``: what a step calls),
:mod:`kdlab.engine.step` splits the rank's share of the global batch into micro-batches,
:mod:`kdlab.engine.init_phase` averages the init parameters' gradients of a two-stage method, and
:mod:`kdlab.engine.rank_io` keeps every file write on rank 0.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kdlab.config import Config
from kdlab.engine import ddp, distributed, early_stop, rank_io, resume_state, summary
from kdlab.engine.callbacks import call_epoch_end, call_validation
from kdlab.engine.checkpoint import write_text_atomic
from kdlab.engine.device import DevicePolicy, build_policy, seed_everything
from kdlab.engine.evaluators import get_evaluator
from kdlab.engine.init_phase import run_init_phase
from kdlab.engine.meter import EpochMeter
from kdlab.engine.metrics import as_batch
from kdlab.engine.optim import build_optimizer, build_scheduler
from kdlab.engine.rng import restore_rng_state
from kdlab.engine.run_folder import RunFolder
from kdlab.engine.step import train_step
from kdlab.errors import KdlabError
from kdlab.methods.base import Distiller


class TrainingDiverged(KdlabError):
    """The loss (or gradient norm) became NaN/inf; the last good checkpoint was left intact."""

    def __init__(self, message: str, *, epoch: int, step: int, terms: dict[str, float],
                 checkpoint: Path | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.terms = terms
        self.checkpoint = checkpoint


def prepare_distiller(distiller: Distiller, policy: DevicePolicy, *, compile: bool = False) -> None:
    """Put a distiller on the policy's device and memory format, in place (the Trainer's set-up).

    ``compile`` compiles student and teacher in place (``nn.Module.compile``: state-dict keys
    unchanged).
    """
    distiller.to(policy.device)
    if policy.channels_last:
        distiller.to(memory_format=torch.channels_last)
    teacher = distiller.teacher
    if compile:
        distiller.student.compile()
        if teacher is not None:
            teacher.compile()


class Trainer:
    """Train a distiller with one config; ``fit()`` returns the run summary (also ``summary.json``).

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` and refuses (one line, nothing
    changed) when there is none. A fresh start in a folder that already holds a run is refused
    unless ``overwrite=True``, which clears the earlier run's files first. ``task`` picks the
    evaluator (``classification``: best by val top-1). ``folder``: a :class:`RunFolder` already
    claimed by the caller (the experiment claims it before writing a teacher cache).
    """

    def __init__(self, cfg: Config, distiller: Distiller, train_loader, val_loader, test_loader=None, *,
                 run_dir: Path, resume: bool = False, overwrite: bool = False,
                 callbacks: list[Any] | None = None, task: str = "classification",
                 folder: RunFolder | None = None) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks or ())  # see kdlab.engine.callbacks
        self.distiller = distiller
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.test_loader = test_loader
        self.evaluator = get_evaluator(task)
        self.folder = folder or RunFolder(run_dir)
        self.run_dir = self.folder.dir
        self._notes: list[str] = []

        tc = cfg.train
        seed_everything(tc.seed, tc.deterministic)
        self.policy: DevicePolicy = distributed.local_policy(build_policy(tc, distiller.student))
        distributed.init(self.policy.device)
        distributed.per_rank_batch(cfg.data.batch_size, distributed.world_size(), tc.accumulate)
        prepare_distiller(distiller, self.policy, compile=tc.compile)
        self.model = ddp.wrap(distiller, device=self.policy.device, sync_bn=tc.sync_bn,
                              find_unused=tc.ddp_find_unused)

        self.steps_per_epoch = len(train_loader)
        if self.steps_per_epoch <= 0:
            raise KdlabError("the training loader is empty (0 batches per epoch)")
        self.params = list(distiller.trainable_parameters())
        self.optimizer = build_optimizer(self.params, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch)

        # position: the epoch (1-indexed) training continues in, batches of it already done
        self.epoch = 1
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best: dict[str, Any] = {"value": None, "epoch": None, "step": None}
        self.last_val: dict[str, float] | None = None
        self.epochs_run = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.wall_before = 0.0
        self.meter = EpochMeter(self.policy.device)
        self._pending_rng: dict[str, Any] | None = None
        self._last_good: Path | None = None
        self._last_train: dict[str, Any] | None = None
        self._val_epoch: int | None = None
        self.early_stop = early_stop.fresh_state()
        self.stop_reason: str | None = None  # a callback's request to stop (e.g. "pruned")
        early_stop.check_settings(self)

        if rank_io.claim(self.folder, resume, overwrite):
            ck = rank_io.load_last(self.folder)
            self._notes.append(resume_state.restore(self, ck, self.folder.last))
            self._pending_rng = resume_state.rank_rng(ck)
            self._last_good = self.folder.last

    # ---- checkpoints --------------------------------------------------------------------
    def _save_last(self) -> None:
        rank_io.save(self.folder.save_last, resume_state.capture(self, self.wall()))  # capture: a collective
        self._last_good = self.folder.last

    def _save_best(self, epoch: int, value: float | None) -> None:
        if not distributed.is_main():
            distributed.barrier()
            return
        self.folder.save_best({
            "student": self.distiller.inference_model().state_dict(),
            "distiller": self.distiller.state_dict_without_teacher(),
            "epoch": epoch,
            "step": self.global_step,
            f"val_{self.evaluator.primary}": value,
            "config": self.cfg.to_dict(),
        })
        distributed.barrier()

    def wall(self) -> float:
        """Seconds of this run so far, resumed parts included."""
        return self.wall_before + (time.perf_counter() - self._fit_start)

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``schedule.epochs`` (or ``train.max_steps``), test, write and return the summary."""
        self._fit_start = time.perf_counter()
        tc = self.cfg.train
        self.logger = rank_io.make_logger(self.run_dir, self.cfg)
        try:
            if distributed.is_main():
                write_text_atomic(self.run_dir / "config.yaml", self.cfg.to_yaml())
            for note in self._notes:
                self.logger.info(note)
            n_params = sum(p.numel() for p in self.params)
            world = distributed.world_size()
            self.logger.info(f"{self.cfg.name}: {self.policy.describe()}"
                             + (f" x {world} processes" if world > 1 else "") + ", "
                             f"{self.steps_per_epoch} steps/epoch, {n_params} trainable parameters")
            if self._pending_rng is not None:
                restore_rng_state(self._pending_rng)
                self._pending_rng = None
            else:
                seed_everything(tc.seed, tc.deterministic)
                if self.distiller.init_epochs > 0:
                    run_init_phase(self, self.folder.init)
            stopped_by = self._train_loop()
            return summary.finish(self, stopped_by)
        except Exception as e:  # recorded, then re-raised; nothing is saved after a failure
            with contextlib.suppress(OSError):  # e.g. the disk is full
                self.logger.log_event("error", message=f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        finally:
            self.logger.close()
            self.folder.unlock()

    def _max_steps_reached(self) -> bool:
        ms = self.cfg.train.max_steps
        return ms is not None and self.global_step >= ms

    def _stopped(self) -> str | None:
        return self.stop_reason or ("early_stop" if self.early_stop["stopped"] else None)

    def _train_loop(self) -> str:
        """Run epochs until ``schedule.epochs`` or ``train.max_steps``; return which one stopped it."""
        epochs = self.cfg.schedule.epochs
        eval_every = self.cfg.train.eval_every
        while self.epoch <= epochs:
            if self._stopped():
                return self._stopped()
            if self._max_steps_reached():
                return "max_steps"
            e = self.epoch
            self._train_epoch(e)
            complete = self.batch_in_epoch >= self.steps_per_epoch
            finished = complete and e == epochs
            stop = finished or self._max_steps_reached()
            self._log_train(e)
            self.epochs_run = max(self.epochs_run, e)
            if complete:  # the position after this epoch: the start of the next one
                self.epoch, self.batch_in_epoch = e + 1, 0
            if (complete and eval_every > 0 and e % eval_every == 0) or stop:
                self._validate(e)
            elif self.val_loader is None:
                self._save_best(e, None)
            self.logger.end_epoch(self._epoch_line(e))
            if complete:
                self.meter = EpochMeter(self.policy.device)
            self._save_last()
            if stop:
                return "epochs" if finished else "max_steps"
            if self._stopped():
                return self._stopped()
        return "epochs"

    def _train_epoch(self, epoch: int) -> None:
        start = self.batch_in_epoch
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch, start)
            items = iter(loader)
        else:  # a plain iterable: skip the batches already done
            items = itertools.islice(iter(loader), start, None)
        self.distiller.train()
        self.logger.start_epoch(epoch, self.steps_per_epoch, start)
        every = self.cfg.train.checkpoint_every_steps
        t0 = time.perf_counter()
        for item in items:
            if self.batch_in_epoch >= self.steps_per_epoch:
                break
            self._train_step(as_batch(item), epoch)
            if self.logger.shows_progress and self.batch_in_epoch % 10 == 0:
                self.logger.advance(f"loss {self.meter.loss.item() / max(self.meter.n, 1):.4f}")
            else:
                self.logger.advance()
            if every > 0 and self.global_step % every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                dt = time.perf_counter() - t0
                self.meter.seconds += dt
                self.train_seconds += dt
                self._save_last()
                t0 = time.perf_counter()
            if self._max_steps_reached():
                break
        dt = time.perf_counter() - t0
        self.meter.seconds += dt
        self.train_seconds += dt
        if self.batch_in_epoch < self.steps_per_epoch and not self._max_steps_reached():
            raise KdlabError(f"the training loader stopped after {self.batch_in_epoch} of its "
                             f"len()={self.steps_per_epoch} batches in epoch {epoch}; it must yield len() "
                             "batches per epoch (minus set_epoch's start_batch)")

    def _train_step(self, batch: Any, epoch: int) -> None:
        train_step(self, batch, epoch)

    def _diverged(self, epoch: int, terms: dict[str, Tensor], what: str) -> TrainingDiverged:
        values = {k: float(v.detach().float()) for k, v in terms.items()}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        ck = (f"last good checkpoint {self._last_good} (left intact)" if self._last_good is not None
              else "no checkpoint was written before it")
        msg = (f"training diverged: non-finite {what} at epoch {epoch}, step {self.global_step} "
               f"(terms: {shown}); {ck}; try a lower optim.lr or set optim.grad_clip")
        return TrainingDiverged(msg, epoch=epoch, step=self.global_step, terms=values,
                                checkpoint=self._last_good)

    # ---- evaluation and logging ---------------------------------------------------------
    def evaluate(self, loader) -> dict[str, float]:
        """Score the inference model (rank 0's buffers on every rank) on ``loader`` with the task's evaluator."""
        model = self.distiller.inference_model()
        distributed.broadcast_buffers(model)
        return self.evaluator(model, loader, self.policy)

    def _validate(self, epoch: int) -> None:
        if self.val_loader is None:
            self._save_best(epoch, None)  # no validation split: best = last
            return
        m = self.evaluate(self.val_loader)
        p = self.evaluator.primary
        self.last_val, self._val_epoch = m, epoch
        improved = self.best["value"] is None or m[p] > self.best["value"]
        if improved:
            self.best = {"value": m[p], "epoch": epoch, "step": self.global_step}
            self._save_best(epoch, m[p])
        self.logger.log_eval("val", epoch=epoch, step=self.global_step, metrics=m, best=improved)
        early_stop.after_validation(self, epoch, improved)
        reason = call_validation(self.callbacks, epoch, self.global_step, m)
        if reason and not self.early_stop["stopped"]:
            self.stop_reason = reason
            self.logger.log_event("stop", epoch=epoch, step=self.global_step, reason=reason)
        self.distiller.train()

    def _log_train(self, epoch: int) -> None:
        if self.meter.steps == 0:
            return
        s = self.meter.summary()
        self.logger.log_train(epoch=epoch, step=self.global_step, lr=s["lr"], terms=s["terms"],
                              loss=s["loss"], top1=s["top1"], img_per_s=s["img_per_s"],
                              batches=self.batch_in_epoch, of=self.steps_per_epoch)
        self._last_train = s
        call_epoch_end(self.callbacks, epoch, self.global_step, s)

    def _epoch_line(self, epoch: int) -> str:
        """The one-line epoch summary printed when no progress bar is shown."""
        s = self._last_train
        parts = [f"epoch {epoch}/{self.cfg.schedule.epochs}", f"step {self.global_step}"]
        if s is not None:
            parts += [f"lr {s['lr']:.4g}", f"loss {s['loss']:.4f}"]
            if self.evaluator.primary == "top1":  # train top-1 is counted for classification batches only
                parts.append(f"train_top1 {s['top1']:.2f}")
            parts.append(f"{s['img_per_s']:.0f} img/s")
        if self.last_val is not None and self._val_epoch == epoch:
            p = self.evaluator.primary
            parts.append(f"val_{p} {self.last_val[p]:.2f}")
        return " | ".join(parts)
