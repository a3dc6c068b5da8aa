"""SP (Tung & Mori 2019): match the batch similarity matrices of the last stage maps."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("sp", paper="Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019")
class SP(Distiller):
    """Similarity-preserving KD: CE + beta·‖G_t − G_s‖²/B² on the last stage map's batch Gram matrix.

    ``G = row-L2-normalised(QQᵀ)`` with ``Q`` the flattened ``stages[-1]`` (RepDistiller
    ``feat[-2]``, mdistiller ``feats[-1]``: the same tensor). Defaults: beta 3000, CE 1
    (RepDistiller ``-r 1 -a 0 -b 3000``; mdistiller ``SP.LOSS.FEAT_WEIGHT 3000``). No connectors,
    so the student and teacher maps may differ in channels and size (only B×B matrices are compared).
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, beta: float = 3000.0,
                 ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher)
        self.beta, self.ce_weight = beta, ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "sp": self.beta * losses.sp(s.stages[-1], t.stages[-1]),
        }
