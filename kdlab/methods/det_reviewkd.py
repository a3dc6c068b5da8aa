"""ReviewKD on the FPN levels (ABF review chain + HCL), as mdistiller's detection code."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab import losses
from kdlab.methods.det_base import DetectionDistiller, DetFeatures
from kdlab.methods.modules.abf import ReviewChain
from kdlab.methods.modules.projectors import to_device_of
from kdlab.methods.registry import register_method


def fpn_review_chain(student: nn.Module, teacher: nn.Module) -> ReviewChain:
    """One ABF per FPN level (5 levels, the FPN's channels; mid = the student's FPN channels, 256)."""
    c_s, c_t = student.backbone.out_channels, teacher.backbone.out_channels
    return to_device_of(ReviewChain([c_s] * 5, [c_t] * 5, mid=c_s), student)


def review_term(chain: ReviewChain, s: DetFeatures, t: DetFeatures) -> Tensor:
    """HCL between the reviewed student levels and the teacher's, level by level (shallow to deep)."""
    feats_t = list(t.fpn.values())
    outs = chain(list(s.fpn.values()), [tuple(f.shape[-2:]) for f in feats_t])
    return losses.hcl(outs, feats_t)


@register_method("det_reviewkd", paper="Chen, Liu, Zhao, Jia, Distilling Knowledge via Knowledge Review, "
                                       "CVPR 2021 (COCO, FPN levels)")
class DetReviewKD(DetectionDistiller):
    """Detection ReviewKD: detector losses + weight·HCL(ABF-reviewed student FPN levels, teacher FPN levels).

    The five FPN levels (p2..p6) of both detectors on the same images; the review chain
    (:class:`~kdlab.methods.modules.abf.ReviewChain`, deepest level without fusion) maps the
    student's levels to the teacher's and :func:`kdlab.losses.hcl` sums over levels. No warm-up.
    Default weight 1.0 (mdistiller's ``KD.REVIEWKD.LOSS_WEIGHT``; its configs use 1.2 for
    R101→R18 and 2.0 for R50→MV2).
    """

    teacher_parts = frozenset({"fpn"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, weight: float = 1.0,
                 det_weight: float = 1.0) -> None:
        super().__init__(student, teacher, det_weight=det_weight)
        self.chain = fpn_review_chain(student, teacher)
        self.weight = weight

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        return {**self.det_terms(s), "reviewkd": self.weight * review_term(self.chain, s, t)}
