"""Evaluation per task: which function scores a model on a loader, and which metric picks the best.

The trainer never knows what a task is: it looks up ``get_evaluator(task)`` and keeps the checkpoint
with the highest ``primary`` metric on the validation split. Classification (``top1``) is
registered here; other tasks register theirs next to their data (detection: COCO AP).

An evaluator is ``fn(model, loader, policy) -> dict[str, float]``; the dict holds ``primary`` and
``n`` (the number of samples scored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdlab.engine.metrics import evaluate
from kdlab.registry import Registry


@dataclass(frozen=True)
class Evaluator:
    fn: Callable[..., dict[str, float]]
    primary: str  # the metric the best checkpoint is chosen by (higher is better)

    def __call__(self, model: Any, loader: Any, policy: Any) -> dict[str, float]:
        return self.fn(model, loader, policy=policy)


EVALUATORS: Registry[Evaluator] = Registry("task")


def register_evaluator(task: str, fn: Callable[..., dict[str, float]], primary: str) -> Evaluator:
    """Register ``fn(model, loader, policy=...)`` as the evaluator of ``task``."""
    ev = Evaluator(fn, primary)
    EVALUATORS.register(task)(ev)
    return ev


def get_evaluator(task: str) -> Evaluator:
    return EVALUATORS.get(task)


register_evaluator("classification", evaluate, primary="top1")
