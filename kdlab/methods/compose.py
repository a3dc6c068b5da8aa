"""compose: a weighted sum of registered methods' losses, with one forward per network.

Lets a config combine methods without writing a new one, e.g. SimKD's table protocol
(CE 1 + KD 1 + β·method), RepDistiller's ``γ·CE + α·KD + β·method`` or CompKD's
``w_cls·CE + w_kd·KD + w_rel·relational + w_inter·white-box``::

    method:
      name: compose
      params:
        ce_weight: 1.0
        terms:
          - {method: kd, weight: 1.0, params: {temperature: 4, kd_weight: 1.0}}
          - {method: fitnet, weight: 100.0}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs, building_parts
from kdlab.methods.registry import register_method

TERM_KEYS = ("method", "weight", "params", "name")


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(Distiller, name)


def _part_specs(terms: Sequence[Mapping[str, Any]],
                facts: Mapping[str, Any]) -> list[tuple[str, str, float, dict[str, Any]]]:
    """Check ``terms`` and return ``(method, label, weight, params)`` per part, with the CE and KD
    rules applied and the data facts each part declares filled in."""
    from kdlab.methods import method_class, method_defaults

    has_kd_part = any(isinstance(e, Mapping) and e.get("method") == "kd" for e in terms)
    specs: list[tuple[str, str, float, dict[str, Any]]] = []
    for i, name, label, weight, params in iter_terms(terms, "compose", "[{method: kd, weight: 1.0}, "
                                                     "{method: sp, weight: 1.0}]"):
        if name == "compose":
            raise KdlabError("compose: a term cannot itself be 'compose'; list its terms directly")
        cls = method_class(name)  # unknown method -> the standard one-line error
        if _overrides(cls, "forward") or cls.loader_kind != "images":
            raise KdlabError(f"compose: method {name!r} changes the forward pass or the training batches "
                             "(input mixing, few-sample tuples) and cannot be a part of compose")
        valid = method_defaults(name)
        if "ce_weight" in params:
            raise KdlabError(f"compose: terms[{i}] ({name}) sets ce_weight; the CE is counted once, "
                             "set compose's own ce_weight instead")
        if "ce_weight" in valid:
            params["ce_weight"] = 0.0
        own_kd = cls.hinton_kd_param
        if has_kd_part and own_kd:
            if params.get(own_kd):
                raise KdlabError(f"compose: terms[{i}] ({name}) sets {own_kd}={params[own_kd]} next to a 'kd' "
                                 f"part, which would count KD twice; drop one of them")
            params[own_kd] = 0.0
        for key, value in facts.items():
            if key in valid and key not in params and value is not None:
                params[key] = value
        specs.append((name, label, weight, params))
    return specs


def iter_terms(terms: Sequence[Mapping[str, Any]], who: str,
               example: str) -> Iterator[tuple[int, str, str, float, dict[str, Any]]]:
    """Check the shape of a composite's ``terms`` list (``compose``, ``det_compose``) and yield
    ``(index, method, label, weight, params)`` per entry; a repeated label gets ``#2``, ``#3``..."""
    if not terms:
        raise KdlabError(f"{who} needs a non-empty 'terms' list, e.g. terms: {example}")
    seen: dict[str, int] = {}
    for i, entry in enumerate(terms):
        if not isinstance(entry, Mapping) or "method" not in entry:
            raise KdlabError(f"{who}: terms[{i}] must be a mapping with a 'method' key, got {entry!r}")
        bad = sorted(set(entry) - set(TERM_KEYS))
        if bad:
            raise KdlabError(f"{who}: terms[{i}] has unknown key(s) {bad}; valid: {', '.join(TERM_KEYS)}")
        name = str(entry["method"])
        label = str(entry.get("name") or name)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        yield i, name, label, float(entry.get("weight", 1.0)), dict(entry.get("params") or {})


@register_method("compose", paper="(composition of registered methods)")
class Compose(Distiller):
    """Weighted sum of other methods' loss terms: ce_weight·CE + Σ weight_i·(method_i's terms).

    ``terms`` is a list of ``{method: <name>, weight: <float, default 1>, params: {...}, name:
    <optional label>}``. Each entry is built as a *part* (:func:`~kdlab.methods.base.
    building_parts`) around the same student and teacher: the composite records the union of the
    parts' feature needs with one recorder per network (one student forward, one teacher forward
    per step), calls each part's ``losses(s, t, batch)`` and returns its terms as
    ``"<label>.<term>"`` multiplied by the entry's weight (the label is the method name, or
    ``name``; repeated methods get ``kd``, ``kd#2``, ...). Parts' connectors are submodules of
    the composite, so they are trained and saved.

    **The CE rule:** the cross-entropy on the student's logits is counted once, as the composite's
    own ``ce`` term with ``ce_weight`` (default 1). Every part that accepts a ``ce_weight``
    hyper-parameter is built with ``ce_weight=0`` (setting it in a part's params is an error), and
    any ``"ce"`` term a part still returns is dropped.

    **The KD rule:** with a ``kd`` part in the list, Hinton KD is counted once, by that part: a
    part that adds its own KD term (``hinton_kd_param``: CRD's, SemCKD's and SRRL's ``kd_weight``)
    is built with it at 0, and setting it non-zero there is an error. Without a ``kd`` part those
    parts keep their own KD term (e.g. SemCKD's KD 1).

    Data facts (``image_size``, ``num_data``, ``num_classes``, ``batch_size``) are forwarded to
    the parts that declare them. The parts are built first and their (per-instance) requirements
    are combined: the union of needs, ``needs_index`` and
    ``drop_last`` if any part sets them, teacher in train mode if any part asks for it, the largest
    ``contrast_negatives`` (parts asking for different contrast modes are an error). At most one
    part may change the reported student (``student_logits`` / ``inference_model``, e.g. SimKD) or
    have an init phase (AB, FT, FSP); its behaviour is delegated to. Methods that override the
    forward pass (input mixing: mixup, mixup3, cutmix) or need another training loader (the
    few-sample tuples of comparative) cannot be parts; use their own ``w_*`` weights instead.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 terms: Sequence[Mapping[str, Any]] = (), ce_weight: float = 1.0,
                 image_size: int | None = None, num_data: int | None = None,
                 num_classes: int | None = None, batch_size: int | None = None) -> None:
        from kdlab.methods import create_distiller

        facts = {"image_size": image_size, "num_data": num_data, "num_classes": num_classes,
                 "batch_size": batch_size}
        specs = _part_specs(terms, facts)
        built: list[Distiller] = []
        with building_parts():  # parts first: their per-instance needs / teacher mode decide ours
            for name, _, _, params in specs:
                built.append(create_distiller(name, student=student, teacher=teacher, **params))
        self.uses_teacher = any(p.uses_teacher for p in built)
        self.needs = Needs(frozenset().union(*(p.needs.student for p in built), {"logits"}),
                           frozenset().union(*(p.needs.teacher for p in built)) or frozenset({"logits"}))
        self.teacher_mode = "train" if any(p.teacher_mode == "train" for p in built) else "eval"
        self.needs_index = any(p.needs_index for p in built)
        self.drop_last = any(p.drop_last for p in built)
        super().__init__(student, teacher)
        self.ce_weight = ce_weight
        self.weights = {label: w for _, label, w, _ in specs}
        self.parts = nn.ModuleDict({label.replace(".", "_"): p for (_, label, _, _), p in zip(specs, built)})
        self.labels = [label for _, label, _, _ in specs]
        modes = {p.contrast_mode for p in built if p.contrast_negatives > 0}
        if len(modes) > 1:
            raise KdlabError(f"compose: parts ask for different contrast modes {sorted(modes)}")
        self.contrast_negatives = max(p.contrast_negatives for p in built)
        self.contrast_mode = modes.pop() if modes else "exact"
        self._student_part = self._single("student_logits", "inference_model", what="change the reported student")
        self._init_part = self._single(what="have an init phase", init=True)
        if self._init_part is not None:
            self.init_epochs, self.init_lr = self._init_part.init_epochs, self._init_part.init_lr

    def _single(self, *methods: str, what: str, init: bool = False) -> Distiller | None:
        hits = [p for p in self.parts.values()
                if (init and p.init_epochs > 0) or any(_overrides(type(p), m) for m in methods)]
        if len(hits) > 1:
            raise KdlabError(f"compose: at most one part may {what}; got "
                             f"{', '.join(type(p).method_name for p in hits)}")
        return hits[0] if hits else None

    def _collect(self, label: str, part_terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
        w = self.weights[label]
        return {f"{label}.{k}": w * v for k, v in part_terms.items() if k != "ce"}

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        parts: dict[str, Tensor] = {}
        for label, part in zip(self.labels, self.parts.values()):
            parts.update(self._collect(label, part.losses(s, t, batch)))
        # after the parts: a part that changes the reported logits (SimKD) computes them in losses()
        ce = self.ce_weight * F.cross_entropy(self.student_logits(s, batch), batch.target)
        return {"ce": ce, **parts}

    def init_losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        label = self.labels[list(self.parts.values()).index(self._init_part)]
        return {f"{label}.{k}": v for k, v in self._init_part.init_losses(s, t, batch).items()}

    def init_parameters(self) -> Iterator[nn.Parameter]:
        return self._init_part.init_parameters()

    def student_logits(self, s: Features, batch: Batch) -> Tensor:
        return s.logits if self._student_part is None else self._student_part.student_logits(s, batch)

    def inference_model(self) -> nn.Module:
        return self.student if self._student_part is None else self._student_part.inference_model()

    def train(self, mode: bool = True) -> Compose:
        super().train(mode)  # parts' own train() may put the shared teacher in eval mode
        if self.teacher is not None:
            self.teacher.train(mode and self.teacher_mode == "train")
        return self

