"""KD on the ROI head's classification logits (teacher ROI head on the student's proposals)."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab import losses
from kdlab.methods.det_base import DetectionDistiller, DetFeatures
from kdlab.methods.registry import register_method


@register_method("det_kd", paper="Hinton et al., Distilling the Knowledge in a Neural Network, 2015 (on ROI logits)")
class DetKD(DetectionDistiller):
    """Detection KD: detector losses + kd_weight·KD(student ROI logits, teacher ROI logits on the same proposals).

    :func:`kdlab.losses.kd` over the R sampled proposals of the batch (K+1 classes, background
    included). Defaults T=1 and weight 1 (our choice: mdistiller's detection code has no KD config;
    the DKD paper's COCO KD row does not give its temperature).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, temperature: float = 1.0,
                 kd_weight: float = 1.0, det_weight: float = 1.0) -> None:
        super().__init__(student, teacher, det_weight=det_weight)
        self.temperature = temperature
        self.kd_weight = kd_weight

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        return {**self.det_terms(s), "kd": self.kd_weight * losses.kd(s.roi_logits, t.roi_logits, self.temperature)}
