"""NKD (Yang et al., ICCV 2023): teacher-weighted target term plus normalized non-target KD."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method

PAPER = ("Yang et al., From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach "
         "with Normalized Loss and Customized Soft Labels, ICCV 2023")


@register_method("nkd", paper=PAPER)
class NKD(Distiller):
    """Normalized KD: CE + t_gt-weighted target CE + gamma·T²-scaled KD over the non-target classes.

    Follows yzd-v/cls_KD ``mmcls/models/dis_losses/nkd.py`` (see :func:`kdlab.losses.nkd`): the
    target term is always at T=1, only the non-target term uses ``temperature`` and the T² factor;
    CE keeps weight 1 (cls_KD only rescales CE for plain KD). Defaults are cls_KD's CIFAR-100
    config (T=3, gamma=3.5); its ImageNet CNN pairs use T=1, gamma=1.5 (the ``NKDLoss`` defaults)
    and DeiT pairs T=1, gamma=1.0. With mixup/cutmix soft labels cls_KD takes the argmax label;
    kdlab batches carry class indices, so that case does not arise.
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 temperature: float = 3.0, gamma: float = 3.5, ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.gamma = gamma
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "nkd": losses.nkd(s.logits, t.logits, batch.target, self.temperature, self.gamma),
        }
