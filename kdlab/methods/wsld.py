"""WSLD (Zhou et al., ICLR 2021): soft labels weighted per sample by a bias–variance factor."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("wsld", paper="Zhou et al., Rethinking Soft Labels for Knowledge Distillation: "
                               "A Bias-Variance Tradeoff Perspective, ICLR 2021")
class WSLD(Distiller):
    """Weighted soft labels: CE + alpha·T²·mean(w_i·softCE_i), w_i = 1 − exp(−CE_s,i / CE_t,i).

    Follows yzd-v/cls_KD ``mmcls/models/dis_losses/wsld.py`` (see :func:`kdlab.losses.wsld`):
    the weight uses hard-label CEs at T=1 on detached logits, so a sample the student already
    fits better than the teacher gets a small weight. CE keeps weight 1. Defaults are the CIFAR
    ones (T=4, alpha 2.25, cls_KD's CIFAR config and ``WSLDLoss`` defaults); ImageNet uses T=2,
    alpha 2.5. The number of classes comes from the logits (the reference needs ``num_classes``).
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 temperature: float = 4.0, alpha: float = 2.25, ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.alpha = alpha
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "wsld": losses.wsld(s.logits, t.logits, batch.target, self.temperature, self.alpha),
        }
