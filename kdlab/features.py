"""Feature taps: where a model's stage outputs live, and a recorder that captures them by hooks.

Every model in the zoo declares its :class:`Taps` once (dotted module paths). A
:class:`FeatureRecorder` installs forward hooks for exactly the parts a method asks for and
returns a :class:`Features` record after a forward pass. No model is rewritten, so torchvision and
timm models get the same treatment through paths into their module trees.

Conventions (shared by every model):

* ``stages[0]`` is the stem output, ``stages[1:]`` the outputs of the network's stages
  (post-activation where the architecture has one), deepest last.
* ``preact[i]`` is ``stages[i]`` taken just before its final ReLU. A tap is either a module's
  output or, written ``"path:in"``, the input of a module (e.g. the block's own closing
  ``nn.ReLU``): a forward-pre-hook there sees the pre-activation.
* ``pooled`` is the input of the classifier, flattened to ``B x D``.
* When a hooked module runs more than once in a forward (a shared ``ReLU``), the last call wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from kdlab.errors import KdlabError

FEATURE_PARTS = ("logits", "stages", "preact", "pooled")


@dataclass(frozen=True)
class TapPoint:
    """One place in a module tree: the output (default) or the input of a module."""

    path: str
    side: str = "out"  # "out" or "in"

    @classmethod
    def parse(cls, spec: str | TapPoint) -> TapPoint:
        if isinstance(spec, TapPoint):
            return spec
        if spec.endswith(":in"):
            return cls(spec[:-3], "in")
        if spec.endswith(":out"):
            return cls(spec[:-4], "out")
        return cls(spec, "out")


@dataclass(frozen=True)
class Taps:
    """Where an architecture's features live, as dotted module paths.

    ``bn_before_relu`` lists, per entry of ``stages[1:]``, the BatchNorm whose affine parameters
    shape the pre-activation at that stage end (OFD's margins); empty where not defined.
    """

    stages: tuple[str, ...]
    preact: tuple[str, ...]
    classifier: str
    bn_before_relu: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.preact and len(self.preact) != len(self.stages):
            raise ValueError("Taps.preact must have one entry per stage (or be empty)")


@dataclass
class Features:
    """What a forward pass recorded. Parts nobody asked for stay ``None``."""

    logits: Tensor | None = None
    stages: list[Tensor] | None = None
    preact: list[Tensor] | None = None
    pooled: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def detach(self) -> Features:
        d = lambda t: None if t is None else t.detach()  # noqa: E731
        dl = lambda ts: None if ts is None else [t.detach() for t in ts]  # noqa: E731
        return Features(
            d(self.logits), dl(self.stages), dl(self.preact), d(self.pooled),
            {k: v.detach() for k, v in self.extra.items()},
        )


def get_taps(model: nn.Module) -> Taps:
    """The taps a model declares (``model.taps``); torchvision/timm wrappers set it on creation."""
    taps = getattr(model, "taps", None)
    if not isinstance(taps, Taps):
        raise KdlabError(
            f"model {type(model).__name__} declares no feature taps; create it with kdlab.create_model "
            "or set model.taps = kdlab.features.Taps(...)"
        )
    return taps


def _resolve(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise KdlabError(f"tap {path!r} is not a module path of {type(model).__name__}") from None


class FeatureRecorder:
    """Records the requested parts of a model's features during its forward pass.

    Usage::

        rec = FeatureRecorder(model, {"logits", "stages"})
        feats = rec(images)          # Features(logits=..., stages=[...])
        rec.remove()                 # hooks are installed once and reused across calls
    """

    def __init__(self, model: nn.Module, parts: Iterable[str]) -> None:
        parts = set(parts)
        bad = parts - set(FEATURE_PARTS)
        if bad:
            raise KdlabError(f"unknown feature part(s) {sorted(bad)}; valid: {list(FEATURE_PARTS)}")
        self.model = model
        self.parts = parts
        self._store: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        hooked = parts - {"logits"}
        if not hooked:
            return
        taps = get_taps(model)
        if "stages" in parts:
            self._add_points("stages", taps.stages)
        if "preact" in parts:
            if not taps.preact:
                raise KdlabError(f"{type(model).__name__} declares no pre-activation taps")
            self._add_points("preact", taps.preact)
        if "pooled" in parts:
            self._add_point("pooled", TapPoint(taps.classifier, "in"))
        self._counts = {k: len(getattr(taps, k)) for k in ("stages", "preact") if k in parts}

    def _add_points(self, part: str, specs: Iterable[str]) -> None:
        for i, spec in enumerate(specs):
            self._add_point(f"{part}.{i}", TapPoint.parse(spec))

    def _add_point(self, key: str, point: TapPoint) -> None:
        module = _resolve(self.model, point.path)
        store = self._store
        if point.side == "in":
            def pre_hook(_m: nn.Module, args: tuple) -> None:
                store[key] = args[0]
            self._handles.append(module.register_forward_pre_hook(pre_hook))
        else:
            def hook(_m: nn.Module, _args: tuple, out: Tensor) -> None:
                store[key] = out
            self._handles.append(module.register_forward_hook(hook))

    def __call__(self, *args, **kwargs) -> Features:
        self._store.clear()
        logits = self.model(*args, **kwargs)
        feats = Features(logits=logits)
        for part, n in getattr(self, "_counts", {}).items():
            setattr(feats, part, [self._store[f"{part}.{i}"] for i in range(n)])
        if "pooled" in self.parts:
            feats.pooled = torch.flatten(self._store["pooled"], 1)
        self._store.clear()
        return feats

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def feature_shapes(model: nn.Module, image_size: int | tuple[int, int], channels: int = 3) -> dict:
    """Shapes (without batch) of every tapped feature for one dummy input; model mode is kept."""
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    parts = {"logits", "stages", "pooled"} | ({"preact"} if get_taps(model).preact else set())
    rec = FeatureRecorder(model, parts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            f = rec(torch.zeros(2, channels, *size, device=p.device, dtype=p.dtype))
    finally:
        rec.remove()
        model.train(was_training)
    out = {"logits": tuple(f.logits.shape[1:]), "pooled": tuple(f.pooled.shape[1:]),
           "stages": [tuple(t.shape[1:]) for t in f.stages]}
    if f.preact is not None:
        out["preact"] = [tuple(t.shape[1:]) for t in f.preact]
    return out
