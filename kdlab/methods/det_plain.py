"""Plain detector training (no teacher): the Faster R-CNN's own four losses; trains detection teachers."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.methods.det_base import DetectionDistiller, DetFeatures
from kdlab.methods.registry import register_method


@register_method("det_plain", paper="Ren et al., Faster R-CNN, NeurIPS 2015; Lin et al., FPN, CVPR 2017")
class DetPlain(DetectionDistiller):
    """Detector trained alone: det_weight·(RPN objectness + RPN box + ROI classification + ROI box losses)."""

    uses_teacher = False
    teacher_parts = frozenset()

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, det_weight: float = 1.0) -> None:
        super().__init__(student, None, det_weight=det_weight)

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        return self.det_terms(s)
