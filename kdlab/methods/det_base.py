"""The detection side of the distiller contract: student detector losses, FPN levels and ROI logits.

A :class:`DetectionDistiller` wraps two torchvision Faster R-CNNs. Its forward on a
:class:`~kdlab.data.coco.DetectionBatch` runs the student step by step (transform, backbone+FPN,
RPN, ROI sampling, box head), as ``GeneralizedRCNN.forward`` does in training, and keeps what
methods read in a :class:`DetFeatures`: the FPN levels, the sampled proposals, the class logits on
them and their matched labels, and the detector's own four losses. The teacher (frozen, no
gradient) runs on the **same transformed images** and only as far as its methods need
(``teacher_parts``): its FPN levels (ReviewKD) and its ROI head on the **student's** sampled
proposals (KD / DKD / CKD on ROI logits, as mdistiller's ``forward_pure_roi_head``).

``losses(s, t, batch)`` returns named, already-weighted terms, like every method: the detector's
own terms (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``, each
times ``det_weight``) plus the method's. In eval mode the forward returns the student's detections.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss

from kdlab.data.coco import DetectionBatch
from kdlab.errors import KdlabError
from kdlab.methods.base import Distiller

DET_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


@dataclass
class DetFeatures:
    """What one detector computed on a batch (fields a network did not compute stay None)."""

    fpn: OrderedDict[str, Tensor] | None = None
    roi_logits: Tensor | None = None  # (R, K+1) class logits on the student's sampled proposals
    roi_labels: Tensor | None = None  # (R,) their matched labels, 0 = background
    proposals: list[Tensor] | None = None
    images: ImageList | None = None
    losses: dict[str, Tensor] = field(default_factory=dict)


def check_detector(model: nn.Module | None, role: str, method: str) -> None:
    if model is not None and not isinstance(model, FasterRCNN):
        raise KdlabError(f"method {method!r} distills detectors; the {role} is a {type(model).__name__}, not a "
                         "Faster R-CNN (use a fasterrcnn_* model and a detection dataset)")


def roi_logits(model: FasterRCNN, fpn: OrderedDict[str, Tensor], proposals: list[Tensor],
               image_sizes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """The ROI head of ``model`` on given proposals: (class logits, box regression)."""
    heads = model.roi_heads
    return heads.box_predictor(heads.box_head(heads.box_roi_pool(fpn, proposals, image_sizes)))


def student_features(model: FasterRCNN, batch: DetectionBatch) -> DetFeatures:
    """The student's training forward, unrolled so that its intermediate results are kept."""
    images, targets = model.transform(list(batch.images), [dict(t) for t in batch.targets])
    fpn = model.backbone(images.tensors)
    proposals, rpn_losses = model.rpn(images, fpn, targets)
    proposals, _, labels, reg_targets = model.roi_heads.select_training_samples(proposals, targets)
    logits, box_reg = roi_logits(model, fpn, proposals, images.image_sizes)
    loss_cls, loss_box = fastrcnn_loss(logits, box_reg, labels, reg_targets)
    return DetFeatures(fpn=fpn, roi_logits=logits, roi_labels=torch.cat(labels), proposals=proposals,
                       images=images, losses={"loss_classifier": loss_cls, "loss_box_reg": loss_box, **rpn_losses})


class DetectionDistiller(Distiller):
    """Base of the detection methods (see the module docstring); ``det_weight`` scales the detector's losses."""

    task: ClassVar[str] = "detection"
    teacher_parts: ClassVar[frozenset[str]] = frozenset({"roi"})  # of "fpn", "roi"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, det_weight: float = 1.0) -> None:
        name = getattr(self, "method_name", type(self).__name__)
        check_detector(student, "student", name)
        check_detector(teacher, "teacher", name)
        if teacher is not None and (student.transform.image_mean != teacher.transform.image_mean
                                    or student.transform.image_std != teacher.transform.image_std):
            raise KdlabError(f"method {name!r}: the teacher reads the student's normalised images, but the two "
                             "detectors normalise with different image_mean / image_std; give them the same")
        super().__init__(student, teacher)
        self.det_weight = det_weight

    def det_terms(self, s: DetFeatures) -> dict[str, Tensor]:
        return {k: self.det_weight * s.losses[k] for k in DET_TERMS}

    def teacher_det_features(self, s: DetFeatures) -> DetFeatures | None:
        if self.teacher is None or not self.teacher_parts:
            return None
        with torch.no_grad():
            fpn = self.teacher.backbone(s.images.tensors)
            logits = None
            if "roi" in self.teacher_parts:
                logits = roi_logits(self.teacher, fpn, [p.detach() for p in s.proposals], s.images.image_sizes)[0]
        return DetFeatures(fpn=OrderedDict((k, v.detach()) for k, v in fpn.items()),
                           roi_logits=None if logits is None else logits.detach())

    def forward(self, batch: DetectionBatch, *args, **kwargs) -> tuple[list[dict] | None, dict[str, Tensor]]:
        if self.is_part:
            raise KdlabError(f"{type(self).__name__} was built as a part of a composite method; run the composite")
        if not isinstance(batch, DetectionBatch):
            raise KdlabError(f"{type(self).__name__} trains on detection batches (a detection dataset), "
                             f"got {type(batch).__name__}")
        if not self.training:
            return self.student(list(batch.images)), {}
        s = student_features(self.student, batch)
        return None, self.losses(s, self.teacher_det_features(s), batch)
