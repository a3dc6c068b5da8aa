"""DKD on the ROI head's classification logits, as mdistiller's detection code (``rcnn_dkd_loss``)."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab import losses
from kdlab.methods.det_base import DetectionDistiller, DetFeatures
from kdlab.methods.registry import register_method


@register_method("det_dkd", paper="Zhao et al., Decoupled Knowledge Distillation, CVPR 2022 (COCO, ROI logits)")
class DetDKD(DetectionDistiller):
    """Detection DKD: detector losses + weight·DKD(student ROI logits, teacher ROI logits, matched labels).

    The teacher's ROI head runs on the student's sampled proposals; the target class of each
    proposal is its matched label (0 = background), and :func:`kdlab.losses.dkd` is applied to the
    R proposals as to a batch. Defaults are mdistiller's detection ones (``KD.DKD``: alpha 1,
    beta 0.25, T 1; no warm-up).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, alpha: float = 1.0,
                 beta: float = 0.25, temperature: float = 1.0, weight: float = 1.0, det_weight: float = 1.0) -> None:
        super().__init__(student, teacher, det_weight=det_weight)
        self.alpha, self.beta, self.temperature, self.weight = alpha, beta, temperature, weight

    def dkd_term(self, s: DetFeatures, t: DetFeatures) -> Tensor:
        return self.weight * losses.dkd(s.roi_logits, t.roi_logits, s.roi_labels, self.alpha, self.beta,
                                        self.temperature)

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        return {**self.det_terms(s), "dkd": self.dkd_term(s, t)}
