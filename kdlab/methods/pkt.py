"""PKT (Passalis & Tefas 2018): match cosine-kernel conditional distributions of pooled features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("pkt", paper="Passalis & Tefas, Learning Deep Representations with Probabilistic "
                              "Knowledge Transfer, ECCV 2018")
class PKT(Distiller):
    """Probabilistic knowledge transfer: CE + beta·divergence of cosine-kernel conditionals (pooled).

    :func:`kdlab.losses.pkt` on the pooled features (RepDistiller ``feat[-1]``, mdistiller
    ``pooled_feat``). Defaults: beta 30000, CE 1 (RepDistiller ``-b 30000``, mdistiller
    ``PKT.LOSS.FEAT_WEIGHT 30000``). No connectors; widths may differ.
    """

    needs = Needs.of(student={"logits", "pooled"}, teacher={"pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, beta: float = 30000.0,
                 ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher)
        self.beta, self.ce_weight = beta, ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "pkt": self.beta * losses.pkt(s.pooled, t.pooled),
        }
