"""Run logging: ``metrics.jsonl`` lines, TensorBoard scalars, a progress bar and ``summary.json``.

Every event is one JSON line appended to ``run_dir/metrics.jsonl`` (``"event"`` is ``"train"``,
``"eval"`` or ``"info"``). TensorBoard scalars go to ``run_dir/tb`` when asked (and tensorboard is
installed; otherwise one warning). Optional back-ends (W&B with ``log.wandb: true``,
:mod:`kdlab.engine.log_backends`) receive the same scalars and the summary. A rich progress bar is
shown only on a terminal with ``progress=True``; otherwise a one-line summary is printed per epoch.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from kdlab.engine.checkpoint import write_text_atomic
from kdlab.engine.log_backends import LogBackend, open_backends

_TB_WARNED = False
_TRAIN_KEYS = {"event", "time", "epoch", "step", "lr", "loss", "top1", "img_per_s"}


def _clean(value: Any) -> Any:
    """JSON-safe values: non-finite floats become strings ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunLogger:
    """Writes a run's metrics to ``metrics.jsonl``, TensorBoard and the console."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, progress: bool = True,
                 backends: list[LogBackend] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tb = self._open_tensorboard() if tensorboard else None
        self._backends = list(backends or ())
        self._progress = None
        self._task = None
        if progress and sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeRemainingColumn(),
                                      TextColumn("{task.fields[info]}"), transient=True)
            self._progress.start()

    @classmethod
    def from_config(cls, run_dir: str | Path, cfg: Any) -> RunLogger:
        """The logger a run's config asks for (``train.tensorboard``, ``train.progress``, ``log.*``)."""
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        return cls(run_dir, tensorboard=cfg.train.tensorboard, progress=cfg.train.progress,
                   backends=open_backends(run_dir, cfg))

    def _open_tensorboard(self):
        global _TB_WARNED
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not _TB_WARNED:
                warnings.warn("tensorboard is not installed; TensorBoard logging is off "
                              "(pip install tensorboard)", stacklevel=3)
                _TB_WARNED = True
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    # ---- events -------------------------------------------------------------------------
    def log_event(self, event: str, **fields: Any) -> None:
        """Append one JSON line ``{"event": event, "time": ..., **fields}`` to metrics.jsonl."""
        record = {"event": event, "time": round(time.time(), 3), **_clean(fields)}
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def log_train(self, *, epoch: int, step: int, lr: float, terms: dict[str, float], loss: float,
                  top1: float, img_per_s: float, **extra: Any) -> None:
        """One training record (averages over the epoch so far); TensorBoard ``train/*``.

        Each loss term gets its own key; a term whose name clashes with a field is logged as ``term_<name>``.
        """
        terms = {(f"term_{k}" if k in _TRAIN_KEYS or k in extra else k): v for k, v in terms.items()}
        self.log_event("train", epoch=epoch, step=step, lr=lr, **terms, loss=loss, top1=top1,
                       img_per_s=img_per_s, **extra)
        scalars = {"lr": lr, **terms, "loss": loss, "top1": top1, "img_per_s": img_per_s}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"train/{k}", v, step)
            self._tb.flush()
        for b in self._backends:
            b.scalars("train", scalars, step)

    def log_eval(self, split: str, *, epoch: int, step: int, metrics: dict[str, float],
                 **extra: Any) -> None:
        """One evaluation record for ``split`` ("val" or "test"); TensorBoard ``<split>/*``.

        Every numeric metric of the task's evaluator is kept (classification: top1, top5, loss;
        detection: AP, AP50, AP75, APs, APm, APl); ``n`` is recorded but not plotted.
        """
        keep = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self.log_event("eval", split=split, epoch=epoch, step=step, **keep, **extra)
        plotted = {k: v for k, v in keep.items() if k != "n"}
        if self._tb is not None:
            for k, v in plotted.items():
                self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()
        tag = f"{split}_{extra['weights']}" if split == "test" and "weights" in extra else split
        for b in self._backends:
            b.scalars(tag, plotted, step)

    def info(self, message: str) -> None:
        """A one-line notice: printed and recorded as an ``info`` event."""
        self.print(message)
        self.log_event("info", message=message)

    def print(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    # ---- progress -----------------------------------------------------------------------
    @property
    def shows_progress(self) -> bool:
        """True when a live progress bar is shown."""
        return self._progress is not None

    def start_epoch(self, epoch: int, total: int, completed: int = 0) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(f"epoch {epoch}", total=total, completed=completed, info="")

    def advance(self, info: str = "") -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, info=info)

    def end_epoch(self, line: str) -> None:
        """Close the epoch's bar (if any) and print its one-line summary."""
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self.print(line)

    # ---- end ----------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` (atomically); back-ends get its scalar fields."""
        for b in self._backends:
            b.summary(_clean(summary))
        return write_text_atomic(self.run_dir / "summary.json", json.dumps(_clean(summary), indent=2) + "\n")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        for b in self._backends:
            b.close()
        self._backends = []
