"""Connectors and feature plumbing shared by SimKD, SRRL, SemCKD and MGD.

* :class:`TapHook` records one module's output (or input) on every forward, without rewriting
  the model; methods use it for features that are not one of the recorder's parts.
* :func:`prepool_point` finds the map a CNN global-average-pools into its classifier (the
  "pre-pool map"): the input of the last average-pool module whose GAP equals the pooled vector,
  checked by one dummy forward. It is ``stages[-1]`` for the CIFAR ResNets, VGG, ResNet50 and
  ShuffleV1, but the post-BN-ReLU map of WRN, the 1024-channel head conv of ShuffleV2 and the
  1280-channel conv of MobileNetV2 (which ``stages[-1]`` is not).
* :func:`frozen_classifier` copies a teacher's classifier out of ``teacher.`` so a method can
  keep it (frozen) in its own state.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.features import TapPoint, feature_shapes, get_taps


class TapHook:
    """Keeps the last tensor seen at one :class:`~kdlab.features.TapPoint` of a model."""

    def __init__(self, model: nn.Module, point: str | TapPoint) -> None:
        self.point = TapPoint.parse(point)
        self.value: Tensor | None = None
        module = model.get_submodule(self.point.path)
        if self.point.side == "in":
            self._handle = module.register_forward_pre_hook(self._pre)
        else:
            self._handle = module.register_forward_hook(self._post)

    def _pre(self, _m: nn.Module, args: tuple) -> None:
        self.value = args[0]

    def _post(self, _m: nn.Module, _args: tuple, out: Any) -> None:
        self.value = out

    def pop(self) -> Tensor:
        """The recorded tensor (and forget it, so no graph is kept alive between steps)."""
        value, self.value = self.value, None
        if value is None:
            raise KdlabError(f"no feature was recorded at {self.point.path!r} during the forward pass")
        return value

    def remove(self) -> None:
        self._handle.remove()


def probe(model: nn.Module, image_size: int, method: str, role: str) -> dict:
    """:func:`kdlab.features.feature_shapes` with every failure turned into one KdlabError line."""
    try:
        return feature_shapes(model, image_size)
    except KdlabError as e:
        raise KdlabError(f"{method}: the {role} {type(model).__name__} cannot serve this method: {e}") from None
    except Exception as e:  # noqa: BLE001 - the model rejected a dummy input
        raise KdlabError(f"{method}: could not run the {role} {type(model).__name__} on a {image_size}px dummy "
                         f"input to size the connectors ({type(e).__name__}: {e})") from None


def require_maps(shapes: list[tuple], method: str, role: str, model: nn.Module) -> None:
    """Raise unless every shape is C×H×W (a CNN map, not ViT tokens)."""
    if not shapes or any(len(s) != 3 for s in shapes):
        raise KdlabError(f"{method} needs CNN feature maps (C×H×W) from the {role}; {type(model).__name__} gives "
                         f"{tuple(shapes[0]) if shapes else ()}... (ViT tokens are served by vitkd only)")


def prepool_point(model: nn.Module, image_size: int, method: str, role: str) -> tuple[TapPoint, tuple[int, ...]]:
    """The tap of the map that the model global-average-pools into its classifier, and its C×H×W."""
    taps = get_taps(model)
    candidates: list[TapPoint] = [TapPoint.parse(s) for s in taps.stages[-1:]]
    candidates += [TapPoint(n, "in") for n, m in model.named_modules()
                   if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d))]
    hooks = [TapHook(model, p) for p in candidates]
    pooled = TapHook(model, TapPoint(taps.classifier, "in"))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(2, 3, image_size, image_size, device=p.device, dtype=p.dtype))
        vec = torch.flatten(pooled.pop(), 1)
        found = None
        for point, hook in zip(candidates, hooks, strict=True):
            v = hook.value
            if isinstance(v, Tensor) and v.dim() == 4 and v.shape[1] == vec.shape[1] and torch.allclose(
                    v.mean(dim=(2, 3)), vec, atol=1e-5, rtol=1e-4):
                found = (point, tuple(v.shape[1:]))
    except KdlabError:
        raise
    except Exception as e:  # noqa: BLE001
        raise KdlabError(f"{method}: could not run the {role} {type(model).__name__} on a {image_size}px dummy "
                         f"input ({type(e).__name__}: {e})") from None
    finally:
        for h in [*hooks, pooled]:
            h.remove()
        model.train(was_training)
    if found is None:
        raise KdlabError(f"{method}: cannot find the map the {role} {type(model).__name__} global-average-pools "
                         "into its classifier (no average-pool module whose input matches the pooled vector)")
    return found


def frozen_classifier(teacher: nn.Module) -> nn.Module:
    """A frozen copy of the teacher's classifier module (``taps.classifier``)."""
    head = copy.deepcopy(teacher.get_submodule(get_taps(teacher).classifier))
    head.requires_grad_(False)
    head.eval()
    return head


def _conv1x1(c_in: int, c_out: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=bias)


def _conv3x3(c_in: int, c_out: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=bias)


class SimKDProjector(nn.Sequential):
    """SimKD: conv1×1 (C_s→C_t/f)-BN-ReLU, conv3×3-BN-ReLU, conv1×1 (→C_t)-BN-ReLU, convs without bias."""

    def __init__(self, c_s: int, c_t: int, factor: int = 2) -> None:
        mid = max(c_t // factor, 1)
        super().__init__(
            _conv1x1(c_s, mid), nn.BatchNorm2d(mid), nn.ReLU(),
            _conv3x3(mid, mid), nn.BatchNorm2d(mid), nn.ReLU(),
            _conv1x1(mid, c_t), nn.BatchNorm2d(c_t), nn.ReLU(),
        )


class SemCKDProj(nn.Sequential):
    """SemCKD's per-pair regressor: conv1×1 (C_s→2C_t)-BN-ReLU, conv3×3-BN-ReLU, conv1×1 (→C_t)."""

    def __init__(self, c_s: int, c_t: int) -> None:
        mid = 2 * c_t
        super().__init__(
            _conv1x1(c_s, mid), nn.BatchNorm2d(mid), nn.ReLU(),
            _conv3x3(mid, mid), nn.BatchNorm2d(mid), nn.ReLU(),
            _conv1x1(mid, c_t),
        )


class MLPEmbed(nn.Module):
    """SemCKD's query/key embedding: Linear(d→2k)-ReLU-Linear(2k→k), then L2 normalisation (no eps)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim_in, 2 * dim_out)
        self.linear2 = nn.Linear(2 * dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear2(torch.relu(self.linear1(x.reshape(x.shape[0], -1))))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


class ConvBNReLU(nn.Sequential):
    """conv1×1 (no bias)-BN-ReLU; ``he_init`` draws weights from N(0, 2/(k²·C_out)) as cls_KD's SRRL."""

    def __init__(self, c_in: int, c_out: int, he_init: bool = False) -> None:
        super().__init__(_conv1x1(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU())
        if he_init:
            conv = self[0]
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))


class Generator(nn.Sequential):
    """MGD/ViTKD generator: conv3×3 (C→C, bias)-ReLU-conv3×3 (C→C, bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__(_conv3x3(channels, channels, bias=True), nn.ReLU(), _conv3x3(channels, channels, bias=True))


def to_device_of(module: nn.Module, like: nn.Module) -> nn.Module:
    """Move ``module`` to the device/dtype of ``like``'s first parameter."""
    p = next(like.parameters(), None)
    return module.to(device=p.device, dtype=p.dtype) if p is not None else module
