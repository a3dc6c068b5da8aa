"""SRRL (Yang et al., ICLR 2021): feature matching plus softmax regression through the teacher's classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.projectors import (
    ConvBNReLU,
    TapHook,
    frozen_classifier,
    prepool_point,
    probe,
    to_device_of,
)
from kdlab.methods.registry import register_method

VARIANTS = ("simkd", "cls_kd")


@register_method("srrl", paper="Yang, Martinez, Bulat, Tzimiropoulos, Knowledge Distillation via Softmax "
                               "Regression Representation Learning, ICLR 2021")
class SRRL(Distiller):
    """SRRL: connector on the student feature, MSE to the teacher's pooled feature and to its logits via its FC.

    Two reference versions (methods.md §1.25, pitfall 14), chosen by ``variant``:

    * ``"simkd"`` (default; DefangChen/SimKD ``models/util.py`` SRRL): the connector conv1×1
      (C_s→C_t, no bias)-BN-ReLU acts on the student's **pooled** vector as a 1×1 map;
      ``L = fm_weight·MSE(conn(p_s), p_t) + sr_weight·MSE(fc_t(conn(p_s)), z_t)`` with both weights 1
      (β=1), plus CE 1 + KD 1 (T=4), SimKD's baseline setting.
    * ``"cls_kd"`` (yzd-v/cls_KD ``dis_losses/srrl.py``): the connector (He-normal init) acts on the
      student's **pre-pool map** and is then pooled; ``fm_weight`` (α) 1, ``sr_weight`` (β) 5 (its
      CIFAR config; its ImageNet configs use 1), CE 1, no KD.

    ``sr_weight`` and ``kd_weight`` default to ``None`` = the chosen variant's value. The teacher
    side is its pooled vector (the classifier's input; cls_KD's GAP of the last stage is the same
    map for ResNets). ``fc_t`` is a frozen copy of the teacher's classifier kept in the method's
    state (gradients flow through it to the connector only). The connector counts in
    :meth:`extra_parameters` and is not part of the deployed student.
    """

    needs = Needs.of(student={"logits", "pooled"}, teacher={"logits", "pooled"})
    hinton_kd_param = "kd_weight"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, variant: str = "simkd",
                 fm_weight: float = 1.0, sr_weight: float | None = None, ce_weight: float = 1.0,
                 kd_weight: float | None = None, temperature: float = 4.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if teacher is None:
            raise KdlabError("method 'srrl' needs a teacher")
        if variant not in VARIANTS:
            raise KdlabError(f"srrl: variant must be one of {list(VARIANTS)}, got {variant!r}")
        t_shapes = probe(teacher, image_size, "srrl", "teacher")
        s_shapes = probe(student, image_size, "srrl", "student")
        c_t = t_shapes["pooled"][0]
        self._hook_s = None
        if variant == "cls_kd":
            s_point, s_shape = prepool_point(student, image_size, "srrl", "student")
            self._hook_s = TapHook(student, s_point)
            c_s = s_shape[0]
        else:
            c_s = s_shapes["pooled"][0]
        self.connector = to_device_of(ConvBNReLU(c_s, c_t, he_init=variant == "cls_kd"), student)
        self.teacher_classifier = frozen_classifier(teacher)
        self.variant = variant
        self.fm_weight = fm_weight
        self.sr_weight = (1.0 if variant == "simkd" else 5.0) if sr_weight is None else sr_weight
        self.kd_weight = (1.0 if variant == "simkd" else 0.0) if kd_weight is None else kd_weight
        self.ce_weight = ce_weight
        self.temperature = temperature

    def connected(self, s: Features) -> Tensor:
        """The connected student vector (B×C_t)."""
        if self._hook_s is not None:
            return torch.flatten(F.adaptive_avg_pool2d(self.connector(self._hook_s.pop()), 1), 1)
        return torch.flatten(self.connector(s.pooled[:, :, None, None]), 1)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        feat = self.connected(s)
        terms = {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "srrl": losses.srrl(feat, t.pooled, self.teacher_classifier(feat), t.logits,
                                fm_weight=self.fm_weight, sr_weight=self.sr_weight),
        }
        if self.kd_weight:
            terms["kd"] = self.kd_weight * losses.kd(s.logits, t.logits, self.temperature)
        return terms

    def train(self, mode: bool = True) -> SRRL:
        super().train(mode)
        self.teacher_classifier.eval()
        return self

