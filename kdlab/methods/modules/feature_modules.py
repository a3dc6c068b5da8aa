"""A network's feature modules: what runs up to the end of its last stage (the init phase's share).

RepDistiller's init phase (``helper/pretrain.py``, AB and FSP) optimises
``model_s.get_feat_modules()``: per architecture, the layers up to the last stage (ResNet:
conv1, bn1, layer1-3; WRN: conv1, block1-3 but *not* the final BN; MobileNetV2: conv1 and the
blocks but not the 1x1 conv to 1280; ShuffleNetV2: not conv2/bn2). It puts the whole student in
eval mode and then those modules back in train mode; the rest (final BN, head convs, classifier)
keeps its initial weights and running statistics and normalises with them.

:func:`feature_module_names` finds the same modules for any model from its ``taps.stages[-1]``:
the modules whose forward has finished when the last stage has been computed (one dummy forward,
no gradient, model in eval mode, so no running statistic moves).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from kdlab.errors import KdlabError
from kdlab.features import TapPoint, get_taps
from kdlab.methods.modules.connectors import feature_parameters

INIT_MODULES = ("features", "all_but_classifier")


def check_init_modules(method: str, value: str) -> None:
    """``init_modules`` of AB/FSP: ``features`` (RepDistiller) or ``all_but_classifier`` (kdlab before)."""
    if value not in INIT_MODULES:
        raise KdlabError(f"{method}: init_modules must be 'features' (RepDistiller: the layers up to the last "
                         f"stage train, the rest of the student stays in eval mode) or 'all_but_classifier' "
                         f"(every student layer but the classifier, in train mode), got {value!r}")


def feature_module_names(model: nn.Module, image_size: int, channels: int = 3) -> tuple[str, ...]:
    """Dotted names of the outermost modules that run before the end of ``taps.stages[-1]``."""
    end = TapPoint.parse(get_taps(model).stages[-1])
    end_module = model.get_submodule(end.path)
    finished: list[str] = []
    at_end: list[list[str]] = []
    handles = []

    def snapshot(*_args: object) -> None:
        if not at_end:
            at_end.append(list(finished))

    for name, module in model.named_modules():
        if module is end_module and end.side == "in":
            handles.append(module.register_forward_pre_hook(snapshot))

        def done(_m: nn.Module, _a: tuple, _o: object, name: str = name) -> None:
            finished.append(name)

        handles.append(module.register_forward_hook(done))
        if module is end_module and end.side == "out":
            handles.append(module.register_forward_hook(snapshot))  # after `done`: the end module counts
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(2, channels, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    names = set(at_end[0]) if at_end else set()
    names.discard("")
    return tuple(n for n in sorted(names) if not any(n.startswith(m + ".") for m in names if m != n))


def feature_module_parameters(model: nn.Module, names: tuple[str, ...]) -> Iterator[nn.Parameter]:
    """Trainable parameters of the modules ``names`` plus those held directly by their ancestors
    (e.g. a ViT's ``pos_embed``), each once, in ``model.named_parameters()`` order."""
    ancestors = {""} | {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    for full, p in model.named_parameters():
        owner, _, _ = full.rpartition(".")
        if p.requires_grad and (any(full.startswith(n + ".") for n in names) or owner in ancestors):
            yield p


def set_feature_modes(model: nn.Module, names: tuple[str, ...]) -> None:
    """RepDistiller's ``model_s.eval(); init_modules.train()``: only ``names`` in train mode."""
    model.eval()
    for n in names:
        model.get_submodule(n).train()


class FeatureInitMixin:
    """For a :class:`~kdlab.methods.base.Distiller` whose init phase trains the student's feature
    modules (AB, FSP); list it before ``Distiller``. The method sets ``init_modules`` (checked by
    :func:`check_init_modules`) and ``image_size`` in its constructor.

    ``init_modules="features"``: :meth:`init_student_parameters` are those of
    :func:`feature_module_names`, and in the init phase :meth:`train` leaves the rest of the
    student in eval mode; ``"all_but_classifier"``: every student parameter but the classifier's,
    the whole student in train mode.
    """

    init_modules: str = "features"
    image_size: int = 32
    _feature_names: tuple[str, ...] | None = None

    def feature_names(self) -> tuple[str, ...]:
        """The student's feature modules (found once, by a dummy forward)."""
        if self._feature_names is None:
            self._feature_names = feature_module_names(self.student, self.image_size)
        return self._feature_names

    def init_student_parameters(self) -> Iterator[nn.Parameter]:
        if self.init_modules == "features":
            return feature_module_parameters(self.student, self.feature_names())
        return feature_parameters(self.student)

    def train(self, mode: bool = True) -> Any:
        super().train(mode)  # type: ignore[misc]
        if mode and self.phase == "init" and self.init_modules == "features":
            set_feature_modes(self.student, self.feature_names())
        return self
