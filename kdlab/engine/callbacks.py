"""Hooks into a training run for tools that drive the trainer (sweeps, benches): no method logic here.

A callback is any object with some of these methods; the trainer calls the ones it has:

* ``on_validation(epoch, step, metrics) -> str | None``: after each validation (``metrics`` holds
  ``top1``, ``top5``, ``loss``, ``n``). Returning a non-empty string asks the run to stop cleanly
  after this epoch: ``last.pt`` is written, the test split is scored as usual and ``summary.json``
  says ``stopped_by: <that string>`` (e.g. ``"pruned"`` for an Optuna pruner).
* ``on_epoch_end(epoch, step, train) -> None``: after each epoch's training record (``train`` holds
  the epoch's averaged loss terms, ``loss``, ``top1``, ``lr``).
* ``on_summary(summary) -> None``: just before ``summary.json`` is written; may add fields (e.g. the
  data layer's count of unreadable files).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Callback(Protocol):  # documentation of the hooks; every method is optional
    def on_validation(self, epoch: int, step: int, metrics: dict[str, float]) -> str | None: ...

    def on_epoch_end(self, epoch: int, step: int, train: dict[str, Any]) -> None: ...

    def on_summary(self, summary: dict[str, Any]) -> None: ...


def call_validation(callbacks: Sequence[Any], epoch: int, step: int, metrics: dict[str, float]) -> str | None:
    """Run every ``on_validation`` hook; the first stop reason returned wins (all hooks still run)."""
    reason = None
    for cb in callbacks:
        hook = getattr(cb, "on_validation", None)
        if hook is not None:
            r = hook(epoch, step, dict(metrics))
            reason = reason or (str(r) if r else None)
    return reason


def call_summary(callbacks: Sequence[Any], summary: dict[str, Any]) -> None:
    """Run every ``on_summary`` hook on the summary (in place)."""
    for cb in callbacks:
        hook = getattr(cb, "on_summary", None)
        if hook is not None:
            hook(summary)


def call_epoch_end(callbacks: Sequence[Any], epoch: int, step: int, train: dict[str, Any]) -> None:
    """Run every ``on_epoch_end`` hook."""
    for cb in callbacks:
        hook = getattr(cb, "on_epoch_end", None)
        if hook is not None:
            hook(epoch, step, dict(train))
