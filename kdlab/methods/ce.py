"""Plain cross-entropy training: teacher training and the student-alone baseline."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("ce", paper="(no distillation)")
class CrossEntropy(Distiller):
    """Cross-entropy only, no teacher: trains teachers and student baselines."""

    needs = Needs.of(student={"logits"}, teacher=set())
    uses_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(student, teacher)
        self.label_smoothing = label_smoothing

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(s.logits, batch.target, label_smoothing=self.label_smoothing)}
