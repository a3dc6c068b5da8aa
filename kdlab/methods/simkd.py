"""SimKD (Chen et al., CVPR 2022): a projector trained by MSE, and the teacher's classifier reused."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features, TapPoint, get_taps
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.projectors import (
    SimKDProjector,
    TapHook,
    frozen_classifier,
    prepool_point,
    probe,
    require_maps,
    to_device_of,
)
from kdlab.methods.registry import register_method


def _pool_to(x: Tensor, size: tuple[int, int] | None) -> Tensor:
    return x if size is None or tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


class SimKDStudent(nn.Module):
    """The deployed SimKD student: images → student backbone → projector → GAP → teacher classifier.

    A forward hook on the student's last stage supplies the map; the student's own classifier
    still runs (its output is discarded), as in SimKD's ``validate_distill``. ``state_dict`` holds
    ``student.*``, ``projector.*`` and ``classifier.*`` (the frozen teacher classifier).
    """

    def __init__(self, student: nn.Module, projector: nn.Module, classifier: nn.Module,
                 source_size: tuple[int, int] | None) -> None:
        super().__init__()
        self.student = student
        self.projector = projector
        self.classifier = classifier
        self.source_size = source_size
        self._hook = TapHook(student, TapPoint.parse(get_taps(student).stages[-1]))

    def head(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """(projected map, logits) for a student last-stage map."""
        proj = self.projector(_pool_to(feat, self.source_size))
        return proj, self.classifier(torch.flatten(F.adaptive_avg_pool2d(proj, 1), 1))

    def forward(self, images: Tensor) -> Tensor:
        self._hook.value = None
        self.student(images)
        return self.head(self._hook.pop())[1]

    def train(self, mode: bool = True) -> SimKDStudent:
        super().train(mode)
        self.classifier.eval()
        return self


@register_method("simkd", paper="Chen, Mei, Zhang, Wang, Feng, Chen, Knowledge Distillation with the Reused "
                                "Teacher Classifier, CVPR 2022")
class SimKD(Distiller):
    """SimKD: MSE between the projected student map and the teacher's map; inference reuses the teacher FC.

    Follows DefangChen/SimKD (``models/util.py`` SimKD, ``helper/loops.py``; methods.md §1.24,
    pitfall 13). The projector is conv1×1 (C_s→C_t/f)-BN-ReLU, conv3×3-BN-ReLU, conv1×1 (→C_t)-BN-ReLU
    with ``factor`` f = 2 (the README also reports 4 and 8). The student side is its last stage
    map (``stages[-1]``, SimKD's ``feat[-2]``); the teacher side is the map its classifier pools
    (``prepool_point``: ``stages[-1]`` for the ResNet/VGG teachers SimKD uses; for a WRN,
    ShuffleV2 or MobileNetV2 teacher the post-BN-ReLU / head-conv map, so that the reused
    classifier sees what it was trained on — SimKD would use ``feat[-2]`` there). The larger map is
    average-pooled to the smaller size before the projector.

    Loss: MSE only (no CE, no KD: cls=div=0, β=1). The teacher's classifier is copied into the
    method (``teacher_classifier``, frozen, out of the optimizer, saved with the method's state);
    :meth:`inference_model` is :class:`SimKDStudent` (backbone + projector + teacher classifier),
    which is what is evaluated and exported as best.pt's ``"student"``, and :meth:`student_logits`
    returns its logits, so training accuracy is reported on them. The projector counts in
    :meth:`extra_parameters`; the student's own classifier is left untrained.
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"logits", "pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, factor: int = 2,
                 weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if teacher is None:
            raise KdlabError("method 'simkd' needs a teacher")
        s_last = probe(student, image_size, "simkd", "student")["stages"][-1]
        require_maps([s_last], "simkd", "student", student)
        t_point, t_shape = prepool_point(teacher, image_size, "simkd", "teacher")
        self._hook_t = TapHook(teacher, t_point)
        c_t = t_shape[0]
        sh, th = s_last[1:], t_shape[1:]
        source_size = tuple(th) if sh[0] * sh[1] > th[0] * th[1] else None
        self.projector = to_device_of(SimKDProjector(s_last[0], c_t, factor), student)
        self.teacher_classifier = frozen_classifier(teacher)
        # not a registered submodule: its parts are already ours, and the state must not hold them twice
        object.__setattr__(self, "deployed", SimKDStudent(student, self.projector, self.teacher_classifier,
                                                          source_size))
        self.factor = factor
        self.weight = weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        self.deployed._hook.value = None  # the training forward went through the recorder
        proj, logits = self.deployed.head(s.stages[-1])
        s.extra["simkd_logits"] = logits
        target = _pool_to(self._hook_t.pop(), tuple(proj.shape[-2:]))
        return {"simkd": self.weight * F.mse_loss(proj, target)}

    def student_logits(self, s: Features, batch: Batch) -> Tensor:
        return s.extra["simkd_logits"]

    def inference_model(self) -> nn.Module:
        return self.deployed

    def train(self, mode: bool = True) -> SimKD:
        super().train(mode)
        self.teacher_classifier.eval()
        return self
