"""KD (Hinton et al. 2015): match the teacher's temperature-softened class distribution."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("kd", paper="Hinton et al., Distilling the Knowledge in a Neural Network, NIPS-W 2014")
class KD(Distiller):
    """Vanilla KD: CE plus T²-scaled KL to the teacher's softened logits.

    Defaults follow mdistiller/RepDistiller on CIFAR (T=4, CE 0.1, KD 0.9); their ImageNet
    recipe uses T=1, CE 0.5, KD 0.5; SimKD's tables use CE 1, KD 1.
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "kd": self.kd_weight * losses.kd(s.logits, t.logits, self.temperature),
        }
