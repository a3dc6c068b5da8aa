"""det_compose: a weighted sum of detection methods' terms, with one forward per detector.

The detection counterpart of ``compose`` (whose parts share the classification forward)::

    method:
      name: det_compose
      params:
        terms:
          - {method: det_reviewkd, weight: 1.0, params: {weight: 1.2}}
          - {method: det_dkd, weight: 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.methods.base import building_parts
from kdlab.methods.compose import iter_terms
from kdlab.methods.det_base import DET_TERMS, DetectionDistiller, DetFeatures
from kdlab.methods.registry import register_method


@register_method("det_compose", paper="(composition of registered detection methods)")
class DetCompose(DetectionDistiller):
    """Weighted sum of detection methods: det_weight·(detector losses) + Σ weight_i·(method_i's KD terms).

    ``terms`` lists ``{method: <det_* name>, weight: <float, default 1>, params: {...}, name:
    <optional label>}``. Parts are built around the same student and teacher (their connectors
    are trained and saved through the composite); the teacher runs once, as far as the union of
    the parts' needs. **The detector-loss rule:** the detector's own losses are counted once, by
    the composite (``det_weight``); parts may not set ``det_weight`` and their detector terms are
    dropped. Terms are returned as ``"<label>.<term>"`` (repeated methods: ``det_kd#2``).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 terms: Sequence[Mapping[str, Any]] = (), det_weight: float = 1.0) -> None:
        from kdlab.methods import create_distiller, method_class

        specs: list[tuple[str, str, float, dict]] = []
        for i, name, label, weight, params in iter_terms(terms, "det_compose", "[{method: det_reviewkd, "
                                                         "weight: 1.0}, {method: det_dkd, weight: 1.0}]"):
            cls = method_class(name)
            if not issubclass(cls, DetectionDistiller) or cls is DetCompose:
                raise KdlabError(f"det_compose: terms[{i}] ({name}) is not a detection method (det_*) or is "
                                 "det_compose itself")
            if "det_weight" in params:
                raise KdlabError(f"det_compose: terms[{i}] ({name}) sets det_weight; the detector losses are "
                                 "counted once, set det_compose's own det_weight instead")
            specs.append((name, label, weight, params))
        with building_parts():
            built = [create_distiller(n, student=student, teacher=teacher, **p) for n, _, _, p in specs]
        self.uses_teacher = any(p.uses_teacher for p in built)
        self.teacher_parts = frozenset().union(*(p.teacher_parts for p in built))
        super().__init__(student, teacher, det_weight=det_weight)
        self.labels = [label for _, label, _, _ in specs]
        self.weights = {label: w for _, label, w, _ in specs}
        self.parts = nn.ModuleDict({label.replace(".", "_").replace("#", "_"): p
                                    for (_, label, _, _), p in zip(specs, built)})

    def losses(self, s: DetFeatures, t: DetFeatures | None, batch) -> dict[str, Tensor]:
        out = self.det_terms(s)
        for label, part in zip(self.labels, self.parts.values()):
            w = self.weights[label]
            out.update({f"{label}.{k}": w * v for k, v in part.losses(s, t, batch).items() if k not in DET_TERMS})
        return out
