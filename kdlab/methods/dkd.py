"""DKD (Zhao et al. 2022): KD split into target-class and non-target-class parts, weighted apart."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("dkd", paper="Zhao et al., Decoupled Knowledge Distillation, CVPR 2022")
class DKD(Distiller):
    """Decoupled KD: CE + ramp(epoch)·(alpha·TCKD + beta·NCKD).

    The ramp is ``min(epoch / warmup_epochs, 1)`` with 1-indexed epochs, as in mdistiller (1/20 in
    the first epoch on CIFAR); ``warmup_epochs=0`` gives full weight from the start (cls_KD, which
    has no warm-up). Defaults are mdistiller's CIFAR ones (alpha 1, beta 8, T 4, warm-up 20); beta
    is set per pair in the shipped configs (methods.md §1.2).
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, alpha: float = 1.0,
                 beta: float = 8.0, temperature: float = 4.0, warmup_epochs: int = 20,
                 ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.warmup_epochs = warmup_epochs
        self.ce_weight = ce_weight

    def ramp(self, epoch: int) -> float:
        return 1.0 if self.warmup_epochs <= 0 else min(epoch / self.warmup_epochs, 1.0)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        dkd = losses.dkd(s.logits, t.logits, batch.target, self.alpha, self.beta, self.temperature)
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "dkd": self.ramp(batch.epoch) * dkd,
        }
