"""CC (Peng et al. 2019): correlation congruence between embedded pooled features, as implemented."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.embed import LinearEmbed, pooled_width
from kdlab.methods.registry import register_method


@register_method("cc", paper="Peng et al., Correlation Congruence for Knowledge Distillation, ICCV 2019")
class CC(Distiller):
    """Correlation congruence (code version): CE + beta·mean_b Σ_d δ_b,d·δ_b+1,d, δ = |e_s − e_t|.

    Follows RepDistiller ``distiller_zoo/CC.py`` (marked there as the authors' code; CompKD copies
    it): two trainable ``LinearEmbed`` layers (Linear, no normalisation) map the student's and the
    teacher's pooled features to ``feat_dim`` = 128, and consecutive samples in batch order are
    paired (:func:`kdlab.losses.cc`). Defaults: beta 0.02, CE 1. The paper's own formulation —
    Gaussian-RBF correlation matrices approximated by a Taylor series, plus instance KD — is not
    what the reference code computes and is not implemented here.
    """

    needs = Needs.of(student={"logits", "pooled"}, teacher={"pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, beta: float = 0.02,
                 feat_dim: int = 128, ce_weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        self.beta, self.ce_weight = beta, ce_weight
        self.embed_s = LinearEmbed(pooled_width(student, image_size), feat_dim)
        self.embed_t = LinearEmbed(pooled_width(teacher, image_size), feat_dim)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "cc": self.beta * losses.cc(self.embed_s(s.pooled), self.embed_t(t.pooled)),
        }
