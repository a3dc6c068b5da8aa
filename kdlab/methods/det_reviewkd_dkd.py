"""ReviewKD on the FPN levels plus DKD on the ROI logits (mdistiller's ``ReviewDKD``)."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab import losses
from kdlab.methods.det_base import DetectionDistiller, DetFeatures
from kdlab.methods.det_reviewkd import fpn_review_chain, review_term
from kdlab.methods.registry import register_method


@register_method("det_reviewkd_dkd", paper="Zhao et al., Decoupled Knowledge Distillation, CVPR 2022 "
                                           "(COCO, DKD + ReviewKD)")
class DetReviewDKD(DetectionDistiller):
    """ReviewKD + DKD: detector losses + review_weight·HCL on FPN levels + dkd_weight·DKD on ROI logits.

    The two terms of :mod:`kdlab.methods.det_reviewkd` and :mod:`kdlab.methods.det_dkd` with one
    student and one teacher forward. Defaults are mdistiller's (DKD alpha 1, beta 0.25, T 1;
    ReviewKD weight 1.0; its configs use 1.2 for R101→R18 and 2.0 for R50→MV2).
    """

    teacher_parts = frozenset({"fpn", "roi"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, review_weight: float = 1.0,
                 alpha: float = 1.0, beta: float = 0.25, temperature: float = 1.0, dkd_weight: float = 1.0,
                 det_weight: float = 1.0) -> None:
        super().__init__(student, teacher, det_weight=det_weight)
        self.chain = fpn_review_chain(student, teacher)
        self.review_weight, self.dkd_weight = review_weight, dkd_weight
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        dkd = losses.dkd(s.roi_logits, t.roi_logits, s.roi_labels, self.alpha, self.beta, self.temperature)
        return {**self.det_terms(s), "reviewkd": self.review_weight * review_term(self.chain, s, t),
                "dkd": self.dkd_weight * dkd}
