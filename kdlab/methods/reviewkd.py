"""ReviewKD (Chen et al., CVPR 2021): knowledge review with attention-based fusion and the HCL loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.abf import ReviewChain
from kdlab.methods.modules.projectors import probe, require_maps, to_device_of
from kdlab.methods.registry import register_method


@register_method("reviewkd", paper="Chen, Liu, Zhao, Jia, Distilling Knowledge via Knowledge Review, CVPR 2021")
class ReviewKD(Distiller):
    """ReviewKD: deeper student levels fused into shallower ones (ABF), matched to the teacher by HCL.

    Levels (methods.md §1.20): the teacher's pre-ReLU ``preact[1:]`` plus its pooled vector as a
    1×1 map (a teacher without pre-activation taps, e.g. most timm/torchvision models, gives its
    ``stages[1:]``); the student's ``stages[1:]`` (post-ReLU; ``student_preact=True`` for
    ``preact[1:]``, mdistiller's ImageNet setting) plus its pooled vector. The channel lists are **derived from the
    recorded shapes** of both networks (one dummy forward at ``image_size``), not typed per pair:
    when the two networks have different numbers of levels, the deepest ``min(n_s, n_t)`` of each
    are paired (deep with deep), as the references' ``zip`` over reversed lists does. The ABF output
    size of each level is the teacher map's size at run time, so a student whose maps are smaller
    (MobileNetV2's stride-2 stem, ShuffleNets) or larger is nearest-resized (pitfall 16).
    ``mid = min(512, C_in of the deepest level)``.

    Loss: ``ce_weight·CE + weight·min(epoch/warmup_epochs, 1)·HCL`` (:func:`kdlab.losses.hcl`),
    with the 1-indexed epoch as mdistiller (first epoch 1/20). The original dvlab code uses the
    0-indexed epoch, so its first epoch has weight 0: ``warmup_from_zero=True`` reproduces that
    one-epoch shift. Defaults: weight 5.0 (mdistiller CIFAR; the original per-pair table is in the
    shipped configs), 20 warm-up epochs (CIFAR; 1 on ImageNet), CE 1. The original also keeps the
    teacher in train mode (BN on batch statistics; ``teacher_mode="train"`` reproduces it, the
    default ``"eval"`` follows mdistiller) and uses Nesterov SGD, batch 128, lr 0.1 (``optim.nesterov``
    and the data/optim keys of a config).
    """

    needs = Needs.of(student={"logits", "stages", "pooled"}, teacher={"logits", "preact", "pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, weight: float = 5.0,
                 warmup_epochs: int = 20, ce_weight: float = 1.0, student_preact: bool = False,
                 warmup_from_zero: bool = False, teacher_mode: str = "eval", image_size: int = 32) -> None:
        if teacher_mode not in ("train", "eval"):
            raise KdlabError(f"reviewkd: teacher_mode must be 'eval' (mdistiller) or 'train' (dvlab), "
                             f"got {teacher_mode!r}")
        self.teacher_mode = teacher_mode
        if teacher is None:
            raise KdlabError("method 'reviewkd' needs a teacher; set teacher.name (and teacher.checkpoint)")
        s_shapes = probe(student, image_size, "reviewkd", "student")
        t_shapes = probe(teacher, image_size, "reviewkd", "teacher")
        if student_preact and "preact" not in s_shapes:
            raise KdlabError(f"reviewkd: student_preact=True but {type(student).__name__} declares no "
                             "pre-activation taps")
        self.s_part = "preact" if student_preact else "stages"
        self.t_part = "preact" if "preact" in t_shapes else "stages"  # no preact taps: post-ReLU stages
        self.needs = Needs.of(student={"logits", self.s_part, "pooled"}, teacher={"logits", self.t_part, "pooled"})
        super().__init__(student, teacher)
        s_maps = s_shapes[self.s_part][1:]
        t_maps = t_shapes[self.t_part][1:]
        require_maps(s_maps, "reviewkd", "student", student)
        require_maps(t_maps, "reviewkd", "teacher", teacher)
        n = min(len(s_maps), len(t_maps)) + 1  # + the pooled level
        self.levels = n
        self.s_offset = len(s_maps) + 1 - n  # shallow student stages left out
        self.t_offset = len(t_maps) + 1 - n
        in_channels = [s[0] for s in s_maps[self.s_offset:]] + [s_shapes["pooled"][0]]
        out_channels = [s[0] for s in t_maps[self.t_offset:]] + [t_shapes["pooled"][0]]
        self.in_channels, self.out_channels = in_channels, out_channels
        self.chain = to_device_of(ReviewChain(in_channels, out_channels), student)
        self.weight = weight
        self.warmup_epochs = warmup_epochs
        self.ce_weight = ce_weight
        self.student_preact = student_preact
        self.warmup_from_zero = warmup_from_zero

    def _levels(self, maps: list[Tensor], pooled: Tensor, offset: int) -> list[Tensor]:
        return [*maps[1 + offset:], pooled.reshape(*pooled.shape, 1, 1)]

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        feats_s = self._levels(getattr(s, self.s_part), s.pooled, self.s_offset)
        feats_t = self._levels(getattr(t, self.t_part), t.pooled, self.t_offset)
        outs = self.chain(feats_s, [tuple(f.shape[-2:]) for f in feats_t])
        epoch = batch.epoch - 1 if self.warmup_from_zero else batch.epoch
        ramp = min(epoch / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "reviewkd": self.weight * ramp * losses.hcl(outs, feats_t),
        }
