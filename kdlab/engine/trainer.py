"""The one training loop every method runs through.

:class:`Trainer` drives a :class:`~kdlab.methods.base.Distiller`: per step it sets ``batch.epoch``
(1-indexed) and ``batch.step``, runs ``logits, terms = distiller(batch)`` under the autocast
policy, sums the terms, stops with :class:`TrainingDiverged` on a non-finite loss (before any
update or save), back-propagates, clips, steps the optimizer and then the per-step LR schedule.

Run folder: ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/{last,best}.pt``
and ``tb/``. ``last.pt`` holds everything needed to resume exactly: weights (teacher excluded),
optimizer, scheduler, RNG states, the position ``(epoch, batch_in_epoch, global_step)``, the
best metric, the running epoch meters and the config. Resuming calls
``train_loader.set_epoch(epoch, start_batch)``, so the loader must make each epoch's order and
augmentation a function of (seed, epoch) alone.

Early stopping (``train.early_stop_patience``, off by default): an evaluation that does not raise
the best val top-1 counts towards a plateau; ``patience`` such evaluations in a row make one. On a
plateau the trainer reloads the best weights (``best.pt``; the optimizer state, momentum included,
is kept), multiplies the learning rate by ``train.plateau_gamma`` and starts counting again, at
most ``train.plateau_lr_drops`` times; the next plateau ends the run (``stopped_by:
"early_stop"``). ``schedule.epochs`` stays the cap. The LR drop scales the scheduler's base LRs,
so it composes with any schedule (few-sample recipes use ``constant``). The counter, the drops
done and the LR scale are in ``last.pt``: a run resumed mid-plateau continues exactly.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kdlab.config import Config
from kdlab.data.batch import Batch
from kdlab.engine.callbacks import call_epoch_end, call_validation
from kdlab.engine.checkpoint import load_checkpoint_file, save_checkpoint, write_text_atomic
from kdlab.engine.device import DevicePolicy, build_policy, seed_everything
from kdlab.engine.init_phase import run_init_phase
from kdlab.engine.logging import RunLogger
from kdlab.engine.metrics import as_batch, evaluate
from kdlab.engine.optim import build_optimizer, build_scheduler
from kdlab.engine.rng import capture_rng_state, restore_rng_state
from kdlab.errors import KdlabError
from kdlab.methods.base import Distiller

CHECKPOINT_FORMAT = 1


class TrainingDiverged(KdlabError):
    """The loss (or gradient norm) became NaN/inf; the last good checkpoint was left intact."""

    def __init__(self, message: str, *, epoch: int, step: int, terms: dict[str, float],
                 checkpoint: Path | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.terms = terms
        self.checkpoint = checkpoint


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---------------------------------------------------------------------------------------------


class _Meter:
    """Running sums over one epoch's steps, kept on the device (no per-step host sync)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.n = 0
        self.steps = 0
        self.seconds = 0.0
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.terms: dict[str, Tensor] = {}
        self.lr = 0.0

    def update(self, loss: Tensor, terms: dict[str, Tensor], logits: Tensor | None, target: Tensor,
               lr: float) -> None:
        bs = target.shape[0]
        self.n += bs
        self.steps += 1
        self.lr = lr
        self.loss += loss.detach().double() * bs
        for k, v in terms.items():
            acc = self.terms.get(k)
            val = v.detach().double() * bs
            self.terms[k] = val if acc is None else acc + val
        if logits is not None and logits.dim() == 2 and target.dim() == 1:
            self.correct += (logits.detach().argmax(dim=1) == target).sum()

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {"loss": self.loss.item() / n, "terms": {k: v.item() / n for k, v in self.terms.items()},
                "top1": 100.0 * self.correct.item() / n, "lr": self.lr,
                "img_per_s": self.n / self.seconds if self.seconds > 0 else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "steps": self.steps, "seconds": self.seconds, "loss": self.loss.item(),
                "correct": int(self.correct.item()), "terms": {k: v.item() for k, v in self.terms.items()},
                "lr": self.lr}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.n, self.steps, self.seconds, self.lr = s["n"], s["steps"], s["seconds"], s["lr"]
        self.loss = torch.tensor(s["loss"], dtype=torch.float64, device=self.device)
        self.correct = torch.tensor(s["correct"], dtype=torch.long, device=self.device)
        self.terms = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                      for k, v in s["terms"].items()}


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

    ``resume=True`` continues from ``run_dir/checkpoints/last.pt`` when it exists (else starts
    fresh and says so). A fresh start in a folder that already holds a checkpoint is refused
    unless ``overwrite=True``, which clears the earlier run's files first.
    """

    def __init__(self, cfg: Config, distiller: Distiller, train_loader, val_loader, test_loader=None, *,
                 run_dir: Path, resume: bool = False, overwrite: bool = False,
                 callbacks: list[Any] | None = None) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks or ())  # see kdlab.engine.callbacks
        self.distiller = distiller
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.test_loader = test_loader
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.pt"
        self.best_path = self.ckpt_dir / "best.pt"
        self.init_path = self.ckpt_dir / "init.pt"
        self._notes: list[str] = []

        tc = cfg.train
        seed_everything(tc.seed, tc.deterministic)
        self.policy: DevicePolicy = build_policy(tc, distiller.student)
        prepare_distiller(distiller, self.policy, compile=tc.compile)

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
        self.best: dict[str, Any] = {"top1": None, "epoch": None, "step": None}
        self.last_val: dict[str, float] | None = None
        self.epochs_run = 0
        self.images_seen = 0
        self.train_seconds = 0.0
        self.wall_before = 0.0
        self._meter = _Meter(self.policy.device)
        self._pending_rng: dict[str, Any] | None = None
        self._last_good: Path | None = None
        self._last_train: dict[str, Any] | None = None
        self._val_epoch: int | None = None
        self.early_stop = {"since_best": 0, "drops": 0, "lr_scale": 1.0, "stopped": False}
        self.stop_reason: str | None = None  # a callback's request to stop (e.g. "pruned")
        self._check_early_stop()

        self._prepare_run_dir(resume, overwrite)

    def _check_early_stop(self) -> None:
        tc = self.cfg.train
        if tc.early_stop_patience is None:
            return
        if tc.early_stop_patience <= 0:
            raise KdlabError(f"train.early_stop_patience must be a positive integer or null, "
                             f"got {tc.early_stop_patience}")
        if tc.plateau_lr_drops < 0 or not 0 < tc.plateau_gamma <= 1:
            raise KdlabError(f"train.plateau_lr_drops must be >= 0 and train.plateau_gamma in (0, 1]; got "
                             f"{tc.plateau_lr_drops} and {tc.plateau_gamma}")
        if self.val_loader is None:
            raise KdlabError("train.early_stop_patience needs a validation split; set data.val_fraction > 0")
        if tc.eval_every <= 0:
            raise KdlabError("train.early_stop_patience needs evaluations; set train.eval_every >= 1")

    # ---- set-up -------------------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        if resume and self.last_path.exists():
            self._load_last()
            return
        if resume:
            self._notes.append(f"resume: no checkpoint at {self.last_path}; starting fresh")
        elif self.last_path.exists() and not overwrite:
            raise KdlabError(f"run folder {self.run_dir} already holds a run ({self.last_path.name}); "
                             "resume it, overwrite it, or choose another run name")
        stale = [self.last_path, self.best_path, self.run_dir / "metrics.jsonl", self.run_dir / "summary.json"]
        if not resume:  # a resumed run killed after its init phase keeps init.pt
            stale.append(self.init_path)
        for p in stale:
            p.unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / "tb", ignore_errors=True)

    def _load_last(self) -> None:
        ck = load_checkpoint_file(self.last_path)
        if ck.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ck:
            raise KdlabError(f"{self.last_path} is not a kdlab resume checkpoint")
        if ck["steps_per_epoch"] != self.steps_per_epoch:
            raise KdlabError(f"cannot resume exactly: {self.last_path} was written with "
                             f"{ck['steps_per_epoch']} batches per epoch, this run has "
                             f"{self.steps_per_epoch} (the same data and batch size are needed)")
        self.distiller.load_state_dict_without_teacher(ck["distiller"])
        try:
            self.optimizer.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError) as e:
            raise KdlabError(f"optimizer state in {self.last_path} does not fit this run ({e})") from None
        self.scheduler.load_state_dict(ck["scheduler"])
        self.epoch, self.batch_in_epoch = ck["epoch"], ck["batch_in_epoch"]
        self.global_step = ck["global_step"]
        self.best = dict(ck["best"])
        self.last_val = ck.get("last_val")
        self.epochs_run = ck["epochs_run"]
        self.images_seen, self.train_seconds = ck["images_seen"], ck["train_seconds"]
        self.wall_before = ck["wall_s"]
        self.early_stop = dict(ck.get("early_stop", self.early_stop))
        self.stop_reason = ck.get("stop_reason")
        if self.batch_in_epoch > 0:
            self._meter.load_state_dict(ck["meter"])
        if ck.get("teacher_buffers"):
            self._teacher_buffers(ck["teacher_buffers"])
        self._pending_rng = ck["rng"]
        self._last_good = self.last_path
        old, new = _flatten(ck.get("config", {})), _flatten(self.cfg.to_dict())
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        where = (f"epoch {self.epoch}, batch {self.batch_in_epoch}/{self.steps_per_epoch}, "
                 f"step {self.global_step}")
        self._notes.append(f"resume: continuing from {self.last_path} at {where}"
                           + (f"; config changed: {', '.join(changed)}" if changed else ""))

    # ---- checkpoints --------------------------------------------------------------------
    def _resume_state(self, wall_s: float) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "distiller": self.distiller.state_dict_without_teacher(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "best": dict(self.best),
            "last_val": self.last_val,
            "epochs_run": self.epochs_run,
            "meter": self._meter.state_dict(),
            "images_seen": self.images_seen,
            "train_seconds": self.train_seconds,
            "wall_s": wall_s,
            "early_stop": dict(self.early_stop),
            "stop_reason": self.stop_reason,
            "teacher_buffers": self._teacher_buffers(),
            "config": self.cfg.to_dict(),
        }

    def _teacher_buffers(self, load: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """A teacher run in train mode updates its BN statistics: those buffers (never its weights)
        go into last.pt so that resuming stays exact. Empty for eval-mode teachers."""
        teacher = self.distiller.teacher
        if teacher is None or self.distiller.teacher_mode != "train":
            return {}
        buffers = dict(teacher.named_buffers())
        if load is not None:
            with torch.no_grad():
                for k, v in load.items():
                    buffers[k].copy_(v)
        return {k: v.detach().clone() for k, v in buffers.items()}

    def _save_last(self) -> None:
        save_checkpoint(self._resume_state(self._wall()), self.last_path)
        self._last_good = self.last_path

    def _save_best(self, epoch: int, val_top1: float | None) -> None:
        save_checkpoint({
            "student": self.distiller.inference_model().state_dict(),
            "distiller": self.distiller.state_dict_without_teacher(),
            "epoch": epoch,
            "step": self.global_step,
            "val_top1": val_top1,
            "config": self.cfg.to_dict(),
        }, self.best_path)

    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self._fit_start)

    # ---- the loop -----------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``schedule.epochs`` (or ``train.max_steps``), test, write and return the summary."""
        self._fit_start = time.perf_counter()
        tc = self.cfg.train
        self.logger = RunLogger.from_config(self.run_dir, self.cfg)
        try:
            write_text_atomic(self.run_dir / "config.yaml", self.cfg.to_yaml())
            for note in self._notes:
                self.logger.info(note)
            n_params = sum(p.numel() for p in self.params)
            self.logger.info(f"{self.cfg.name}: {self.policy.describe()}, "
                             f"{self.steps_per_epoch} steps/epoch, {n_params} trainable parameters")
            if self._pending_rng is not None:
                restore_rng_state(self._pending_rng)
                self._pending_rng = None
            else:
                seed_everything(tc.seed, tc.deterministic)
                if self.distiller.init_epochs > 0:
                    run_init_phase(self, self.init_path)
            stopped_by = self._train_loop()
            return self._finish(stopped_by)
        except Exception as e:  # recorded, then re-raised; nothing is saved after a failure
            self.logger.log_event("error", message=f"{type(e).__name__}: {e}".splitlines()[0])
            raise
        finally:
            self.logger.close()

    def _max_steps_reached(self) -> bool:
        ms = self.cfg.train.max_steps
        return ms is not None and self.global_step >= ms

    def _train_loop(self) -> str:
        """Run epochs until ``schedule.epochs`` or ``train.max_steps``; return which one stopped it."""
        epochs = self.cfg.schedule.epochs
        eval_every = self.cfg.train.eval_every
        while self.epoch <= epochs:
            if self.early_stop["stopped"] or self.stop_reason:
                return self.stop_reason or "early_stop"
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
                self._meter = _Meter(self.policy.device)
            self._save_last()
            if stop:
                return "epochs" if finished else "max_steps"
            if self.early_stop["stopped"] or self.stop_reason:
                return self.stop_reason or "early_stop"
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
                self.logger.advance(f"loss {self._meter.loss.item() / max(self._meter.n, 1):.4f}")
            else:
                self.logger.advance()
            if every > 0 and self.global_step % every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                dt = time.perf_counter() - t0
                self._meter.seconds += dt
                self.train_seconds += dt
                self._save_last()
                t0 = time.perf_counter()
            if self._max_steps_reached():
                break
        dt = time.perf_counter() - t0
        self._meter.seconds += dt
        self.train_seconds += dt
        if self.batch_in_epoch < self.steps_per_epoch and not self._max_steps_reached():
            raise KdlabError(f"the training loader stopped after {self.batch_in_epoch} of its "
                             f"len()={self.steps_per_epoch} batches in epoch {epoch}; it must yield len() "
                             "batches per epoch (minus set_epoch's start_batch)")

    def _train_step(self, batch: Batch, epoch: int) -> None:
        device = self.policy.device
        if batch.image.device != device:
            batch = batch.to(device)
        batch.image = self.policy.prepare_images(batch.image)
        batch.epoch = epoch
        batch.step = self.global_step
        with self.policy.autocast():
            logits, terms = self.distiller(batch)
        if not terms:
            raise KdlabError(f"{type(self.distiller).__name__} returned no loss terms")
        loss = sum(terms.values())
        if loss.dim() != 0:
            raise KdlabError(f"loss terms must be scalars; got shape {tuple(loss.shape)}")
        if not bool(torch.isfinite(loss)):
            raise self._diverged(epoch, terms, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.optim.grad_clip
        if clip is not None and clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            if not bool(torch.isfinite(norm)):
                raise self._diverged(epoch, terms, f"gradient norm ({norm.item()})")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self._meter.update(loss, terms, logits, batch.target, lr)
        self.images_seen += batch.target.shape[0]
        self.global_step += 1
        self.batch_in_epoch += 1

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
    def _evaluate(self, loader) -> dict[str, float]:
        return evaluate(self.distiller.inference_model(), loader, policy=self.policy)

    def _validate(self, epoch: int) -> None:
        if self.val_loader is None:
            self._save_best(epoch, None)  # no validation split: best = last
            return
        m = self._evaluate(self.val_loader)
        self.last_val, self._val_epoch = m, epoch
        improved = self.best["top1"] is None or m["top1"] > self.best["top1"]
        if improved:
            self.best = {"top1": m["top1"], "epoch": epoch, "step": self.global_step}
            self._save_best(epoch, m["top1"])
        self.logger.log_eval("val", epoch=epoch, step=self.global_step, metrics=m, best=improved)
        self._early_stopping(epoch, improved)
        reason = call_validation(self.callbacks, epoch, self.global_step, m)
        if reason and not self.early_stop["stopped"]:
            self.stop_reason = reason
            self.logger.log_event("stop", epoch=epoch, step=self.global_step, reason=reason)
        self.distiller.train()

    def _early_stopping(self, epoch: int, improved: bool) -> None:
        """Count evaluations without improvement; on a plateau drop the LR from the best weights, or stop."""
        tc, es = self.cfg.train, self.early_stop
        if tc.early_stop_patience is None:
            return
        es["since_best"] = 0 if improved else es["since_best"] + 1
        if es["since_best"] < tc.early_stop_patience:
            return
        if es["drops"] >= tc.plateau_lr_drops:
            es["stopped"] = True
            self.logger.log_event("early_stop", epoch=epoch, step=self.global_step, drops=es["drops"],
                                  best_epoch=self.best["epoch"])
            self.logger.info(f"early stop after epoch {epoch}: {es['since_best']} evaluations without "
                             f"improvement, {es['drops']} LR drops done; best epoch {self.best['epoch']}")
            return
        best = load_checkpoint_file(self.best_path)
        self.distiller.load_state_dict_without_teacher(best["distiller"])
        gamma = tc.plateau_gamma
        self.scheduler.base_lrs = [b * gamma for b in self.scheduler.base_lrs]
        for g in self.optimizer.param_groups:
            g["lr"] *= gamma
        es["drops"] += 1
        es["lr_scale"] *= gamma
        es["since_best"] = 0
        self.logger.log_event("plateau", epoch=epoch, step=self.global_step, drops=es["drops"],
                              lr_scale=es["lr_scale"], best_epoch=self.best["epoch"])
        self.logger.info(f"plateau after epoch {epoch}: reloaded the best weights (epoch {self.best['epoch']}), "
                         f"LR x{gamma:g} (drop {es['drops']}/{tc.plateau_lr_drops})")

    def _log_train(self, epoch: int) -> None:
        if self._meter.steps == 0:
            return
        s = self._meter.summary()
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
            parts += [f"lr {s['lr']:.4g}", f"loss {s['loss']:.4f}", f"train_top1 {s['top1']:.2f}",
                      f"{s['img_per_s']:.0f} img/s"]
        if self.last_val is not None and self._val_epoch == epoch:
            parts.append(f"val_top1 {self.last_val['top1']:.2f}")
        return " | ".join(parts)

    # ---- the end ------------------------------------------------------------------------
    def _finish(self, stopped_by: str) -> dict[str, Any]:
        has_val = self.val_loader is not None
        test_last = test_best = test_n = None
        if self.cfg.train.test_at_end and self.test_loader is not None and self.global_step > 0:
            m_last = self._evaluate(self.test_loader)
            self.logger.log_eval("test", epoch=self.epochs_run, step=self.global_step, metrics=m_last,
                                 weights="last")
            test_last, test_n = m_last["top1"], int(m_last["n"])
            if has_val and self.best["step"] is not None and self.best["step"] != self.global_step:
                keep = {k: v.detach().clone() for k, v in self.distiller.state_dict_without_teacher().items()}
                best = load_checkpoint_file(self.best_path)
                self.distiller.load_state_dict_without_teacher(best["distiller"])
                try:
                    m_best = self._evaluate(self.test_loader)
                finally:
                    self.distiller.load_state_dict_without_teacher(keep)
                self.logger.log_eval("test", epoch=self.best["epoch"], step=self.best["step"], metrics=m_best,
                                     weights="best")
                test_best = m_best["top1"]
            else:
                test_best = test_last
        if not has_val:
            self.best = {"top1": None, "epoch": self.epochs_run, "step": self.global_step}
        not_run = "not run (no test loader or train.test_at_end=false)"
        summary = {
            "name": self.cfg.name,
            "best_epoch": self.best["epoch"],
            "val_top1": self.best["top1"],
            "test_top1_at_best_val": test_best,
            "test_top1_last": test_last,
            "test_images": test_n,
            "epochs_run": self.epochs_run,
            "steps": self.global_step,
            "wall_s": round(self._wall(), 3),
            "img_per_s": self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0,
            "val_top1_last": self.last_val["top1"] if self.last_val else None,
            "stopped_by": stopped_by,
            "plateau_lr_drops": self.early_stop["drops"],
            "splits": {
                "val_top1": ("val split (held out from training data), at the best epoch" if has_val
                             else "none: no val loader, so best = last"),
                "best_epoch": ("chosen by val top-1" if has_val
                               else "no val loader: best = last (final weights)"),
                "test_top1_at_best_val": ("test split, weights of checkpoints/best.pt"
                                          if test_best is not None else not_run),
                "test_top1_last": "test split, final weights" if test_last is not None else not_run,
                "val_top1_last": "val split, final weights" if has_val else "none",
            },
        }
        self.logger.write_summary(summary)
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        self.logger.print(f"{self.cfg.name}: done after {self.global_step} steps (stopped by {stopped_by}); "
                          f"best epoch {summary['best_epoch']}, val_top1 {fmt(summary['val_top1'])}, "
                          f"test_top1 at best {fmt(test_best)}, last {fmt(test_last)}")
        return summary
