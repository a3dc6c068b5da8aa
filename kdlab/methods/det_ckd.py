"""CKD-SW's sample-wise contrastive loss on the ROI head's classification logits."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.losses.logit_relation import CKD_NEGATIVES
from kdlab.methods.det_base import DetectionDistiller, DetFeatures
from kdlab.methods.registry import register_method


@register_method("det_ckd", paper="Zhu et al., CKD: Contrastive Knowledge Distillation from A Sample-wise "
                                  "Perspective, arXiv 2404.14109 (on ROI logits)")
class DetCKD(DetectionDistiller):
    """Detection CKD: detector losses + kd_weight·InfoNCE over the sampled proposals' ROI logits.

    :func:`kdlab.losses.ckd` with the R proposals of the batch as its samples (teacher ROI head
    on the student's proposals; each proposal's positive is the teacher's logits on the same
    proposal). The paper reports COCO but its detection settings are not in the released code:
    the defaults (λ 1, τ 1) are ours.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, temperature: float = 1.0,
                 kd_weight: float = 1.0, negatives: str = "teacher_student", det_weight: float = 1.0) -> None:
        super().__init__(student, teacher, det_weight=det_weight)
        if negatives not in CKD_NEGATIVES:
            raise KdlabError(f"det_ckd: negatives must be one of {', '.join(CKD_NEGATIVES)}; got {negatives!r}")
        if temperature <= 0:
            raise KdlabError(f"det_ckd: temperature must be positive, got {temperature}")
        self.temperature, self.kd_weight, self.negatives = temperature, kd_weight, negatives

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        ckd = losses.ckd(s.roi_logits, t.roi_logits, self.temperature, self.negatives)
        return {**self.det_terms(s), "ckd": self.kd_weight * ckd}
