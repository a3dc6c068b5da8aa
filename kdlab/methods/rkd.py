"""RKD (Park et al. 2019): match pairwise distances and triplet angles of pooled embeddings."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("rkd", paper="Park, Kim, Lu, Cho, Relational Knowledge Distillation, CVPR 2019")
class RKD(Distiller):
    """Relational KD: CE + beta·(25·distance + 50·angle) on the pooled features.

    Distances are normalised by their mean positive entry, both terms are SmoothL1, and the
    teacher side is computed without gradient (:func:`kdlab.losses.rkd`). Defaults: distance 25,
    angle 50, beta 1, CE 1 (RepDistiller ``RKDLoss`` with ``-b 1``; mdistiller ``RKD`` with
    ``PDIST.SQUARED False``, eps 1e-12). The angle term builds B×B×B tensors (fine at batch 64).
    ``feature="logits"`` applies it to the logits instead, as CompKD (alextxu/ckd) does; CompKD
    also draws class-balanced batches (5 images per class), which is the data option
    ``data.per_class=5`` (:mod:`kdlab.data.class_balanced`).
    """

    needs = Needs.of(student={"logits", "pooled"}, teacher={"logits", "pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, beta: float = 1.0,
                 distance_weight: float = 25.0, angle_weight: float = 50.0, feature: str = "pooled",
                 ce_weight: float = 1.0) -> None:
        super().__init__(student, teacher)
        if feature not in ("pooled", "logits"):
            raise KdlabError(f"rkd: feature must be 'pooled' or 'logits', got {feature!r}")
        self.beta, self.distance_weight, self.angle_weight = beta, distance_weight, angle_weight
        self.feature, self.ce_weight = feature, ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        e_s, e_t = getattr(s, self.feature), getattr(t, self.feature)
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "rkd": self.beta * losses.rkd(e_s, e_t, self.distance_weight, self.angle_weight),
        }
