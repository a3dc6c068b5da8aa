"""ImageNet-scale models from torchvision and timm, reached by name prefix, with feature taps.

``create_model("torchvision:resnet18", num_classes=1000)`` builds any torchvision classification
model (``torchvision.models.list_models(module=torchvision.models)``), and
``create_model("timm:mobilenetv1_100")`` any timm model (``timm.list_models()``; a pretrained tag
such as ``resnet18.a1_in1k`` is accepted). Extra keyword arguments go to the library's constructor.
``pretrained=False`` by default; with ``pretrained=True`` the weights come from the library's
download/cache and a failure (e.g. no internet) raises a one-line :class:`KdlabError`.

Taps set on the returned model (``model.taps``):

* torchvision ResNet family (resnet*, resnext*, wide_resnet*): stages ``relu`` (stem) and
  ``layer1..4``; preact ``relu:in`` and ``layerK.{last}.relu:in``. torchvision blocks call one shared
  ``relu`` module two or three times; the recorder keeps the last call, which is the block's closing
  ReLU, so its input is the stage's pre-activation. ``bn_before_relu`` = the last block's
  ``bn2``/``bn3``; classifier ``fc``.
* torchvision mobilenet_v2: stages ``features.{0,3,6,13,17}`` (the stem and the ends of the 24-,
  32-, 96- and 320-channel groups, as in the CIFAR MobileNetV2); blocks end linearly, so preact equals
  the stage except for the stem (input of its ReLU6); classifier ``classifier`` (its input is the
  pooled 1280-d vector).
* other torchvision models with a ``features`` Sequential (VGG, EfficientNet, MobileNetV3, ConvNeXt,
  DenseNet, ...): stages = the last child of ``features`` at each spatial resolution (found with one
  dummy 64x64 forward), no preact.
* timm models: stages = the modules of ``model.feature_info``; classifier = the path of
  ``get_classifier()``; preact and ``bn_before_relu`` only for timm ResNets (input of each stage's
  last ``act2``/``act3``; its ``bn2``/``bn3``).
* anything else: classifier only (``fc``/``classifier``/``heads``/``head``, else the last Linear);
  no stages or preact. The recorder raises a clear error when a missing part is asked for.

All ``inplace`` flags (ReLU, ReLU6, Dropout, ...) are switched off: an in-place activation would
overwrite a tensor a pre-activation hook has just recorded. This changes no weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdlab.errors import KdlabError, unknown
from kdlab.features import Taps

PREFIXES = ("torchvision:", "timm:")
_HEAD_NAMES = ("fc", "classifier", "heads", "head")


def is_external(name: str) -> bool:
    """True when ``name`` carries a ``torchvision:`` or ``timm:`` prefix."""
    return name.startswith(PREFIXES)


def create_external(name: str, num_classes: int = 1000, *, pretrained: bool = False, **kw: Any) -> nn.Module:
    """Build ``torchvision:<name>`` or ``timm:<name>`` and attach its taps."""
    lib, _, arch = name.partition(":")
    if lib == "torchvision":
        model = _torchvision(arch, num_classes, pretrained, kw)
        taps = _torchvision_taps(model)
    elif lib == "timm":
        model = _timm(arch, num_classes, pretrained, kw)
        taps = _timm_taps(model)
    else:
        raise KdlabError(f"unknown model prefix {lib!r}; use one of {list(PREFIXES)}")
    _disable_inplace(model)
    model.taps = taps
    return model


# ----------------------------------------------------------------------------------------------
# construction


def _torchvision(arch: str, num_classes: int, pretrained: bool, kw: dict[str, Any]) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise unknown("torchvision model", arch, names)
    if not pretrained:
        try:
            return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kw)
        except TypeError as e:
            raise KdlabError(f"torchvision:{arch} rejected the arguments {sorted(kw)}: {e}") from None
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT", **kw)
    except TypeError as e:
        raise KdlabError(f"torchvision:{arch} rejected the arguments {sorted(kw)}: {e}") from None
    except Exception as e:
        raise KdlabError(f"could not get pretrained weights for torchvision:{arch} (offline and not in the "
                         f"torch hub cache?): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from None
    _resize_head(model, f"torchvision:{arch}", num_classes)
    return model


def _resize_head(model: nn.Module, label: str, num_classes: int) -> None:
    """Replace the final Linear of a pretrained 1000-class model by a fresh one of ``num_classes``."""
    path = _head_path(model)
    head = model.get_submodule(path)
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        path, head = f"{path}.{len(head) - 1}", head[-1]
    if not isinstance(head, nn.Linear):
        raise KdlabError(f"{label}: cannot resize the head {path!r} ({type(head).__name__}) to {num_classes} "
                         "classes; use num_classes=1000 with pretrained=True")
    if head.out_features == num_classes:
        return
    parent, _, leaf = path.rpartition(".")
    new = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _timm(arch: str, num_classes: int, pretrained: bool, kw: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        raise unknown("timm model", arch, timm.list_models())
    try:
        return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **kw)
    except TypeError as e:
        raise KdlabError(f"timm:{arch} rejected the arguments {sorted(kw)}: {e}") from None
    except Exception as e:
        if not pretrained:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        raise KdlabError(f"could not get pretrained weights for timm:{arch} (offline and not in the "
                         f"Hugging Face cache?): {type(e).__name__}: {first}") from None


def _disable_inplace(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False


# ----------------------------------------------------------------------------------------------
# taps


def _head_path(model: nn.Module) -> str:
    for name in _HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise KdlabError(f"cannot find the classifier of {type(model).__name__}")
    return linears[-1]


def _torchvision_taps(model: nn.Module) -> Taps:
    from torchvision.models import MobileNetV2, ResNet
    from torchvision.models.resnet import Bottleneck

    if isinstance(model, ResNet):
        ends = [f"layer{s}.{len(model.get_submodule(f'layer{s}')) - 1}" for s in (1, 2, 3, 4)]
        bn = "bn3" if isinstance(model.layer1[0], Bottleneck) else "bn2"
        return Taps(
            stages=("relu", "layer1", "layer2", "layer3", "layer4"),
            preact=("relu:in", *(f"{e}.relu:in" for e in ends)),
            classifier="fc",
            bn_before_relu=tuple(f"{e}.{bn}" for e in ends),
        )
    if isinstance(model, MobileNetV2) and len(model.features) == 19:
        ends = (3, 6, 13, 17)
        return Taps(
            stages=("features.0", *(f"features.{i}" for i in ends)),
            preact=("features.0.2:in", *(f"features.{i}" for i in ends)),
            classifier="classifier",
            bn_before_relu=tuple(f"features.{i}.conv.3" for i in ends),
        )
    features = getattr(model, "features", None)
    stages = _stages_by_resolution(model, features) if isinstance(features, nn.Sequential) else ()
    return Taps(stages=stages, preact=(), classifier=_head_path(model))


def _stages_by_resolution(model: nn.Module, features: nn.Sequential, size: int = 64) -> tuple[str, ...]:
    """Paths ``features.{i}`` of the last child at each spatial resolution (one dummy forward)."""
    sizes: dict[int, tuple[int, ...]] = {}
    handles = []
    for i, child in enumerate(features):
        def hook(_m: nn.Module, _a: tuple, out: Any, i: int = i) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                sizes[i] = tuple(out.shape[-2:])
        handles.append(child.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except Exception:
        return ()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    stages: list[str] = []
    last_size = None
    for i in sorted(sizes):
        if stages and sizes[i] == last_size:
            stages[-1] = f"features.{i}"
        else:
            stages.append(f"features.{i}")
        last_size = sizes[i]
    return tuple(stages)


def _timm_taps(model: nn.Module) -> Taps:
    info = getattr(model, "feature_info", None)
    dicts = info.get_dicts() if hasattr(info, "get_dicts") else (info or [])
    stages = tuple(d["module"] for d in dicts if isinstance(d, dict) and "module" in d)
    known = dict(model.named_modules())
    if not all(s in known for s in stages):
        stages = ()
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    paths = [n for n, m in model.named_modules() if m is head and n]
    classifier = paths[0] if paths else _head_path(model)
    preact: tuple[str, ...] = ()
    bns: tuple[str, ...] = ()
    if stages and stages[0] == "act1" and type(model).__name__ == "ResNet":
        # timm ResNet blocks close with their own act2 (basic) / act3 (bottleneck) module
        ends = [f"{s}.{len(model.get_submodule(s)) - 1}" for s in stages[1:]]
        deep = hasattr(model.get_submodule(ends[0]), "act3")
        preact = ("act1:in", *(f"{e}.{'act3' if deep else 'act2'}:in" for e in ends))
        bns = tuple(f"{e}.{'bn3' if deep else 'bn2'}" for e in ends)
    return Taps(stages=stages, preact=preact, classifier=classifier, bn_before_relu=bns)
