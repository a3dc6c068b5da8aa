"""Connectors of the feature methods, and the shape plumbing they share.

* :func:`probe_maps` — ``C×H×W`` of a network's stage (or pre-activation) maps from one dummy
  forward at the run's image size, with a clear error when a model cannot be probed.
* :func:`pair_stages` — which student stage meets which teacher stage when their numbers differ
  (e.g. a 3-stage CIFAR ResNet and a 4-stage VGG): from the shallow end, as RepDistiller's
  ``zip`` does, or from the deep end, as mdistiller's OFD ``_align_list`` does.
* :class:`ConvBNConnector` — OFD's conv 1×1 + BN (He-normal conv, BN γ=1, β=0).
* :class:`VIDRegressor` — VID's three 1×1 convs with ReLUs between them, no bias.
* :func:`feature_parameters` — a network's parameters minus its classifier (AB/FSP init phase,
  RepDistiller's ``get_feat_modules()``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.features import feature_shapes, get_taps


def probe_maps(model: nn.Module, image_size: int, part: str, method: str, role: str) -> list[tuple[int, int, int]]:
    """Shapes ``(C, H, W)`` of ``part`` ("stages" or "preact") for one ``image_size`` dummy input."""
    try:
        shapes = feature_shapes(model, image_size)
    except KdlabError:
        raise
    except Exception as e:  # the model rejects this input size
        raise KdlabError(f"{method}: could not run the {role} ({type(model).__name__}) on a "
                         f"{image_size}px dummy input to size the connectors ({e})") from None
    maps = shapes.get(part)
    if not maps:
        raise KdlabError(f"{method}: the {role} ({type(model).__name__}) declares no {part} taps")
    bad = [i for i, s in enumerate(maps) if len(s) != 3]
    if bad:
        raise KdlabError(f"{method}: the {role}'s {part}[{bad[0]}] has shape {maps[bad[0]]}, not C×H×W; "
                         "this method needs convolutional feature maps")
    return [tuple(int(v) for v in s) for s in maps]


def pair_stages(n_s: int, n_t: int, align: str = "start") -> list[tuple[int, int]]:
    """Index pairs ``(student, teacher)`` over ``min(n_s, n_t)`` stages.

    ``align="start"`` pairs the shallowest stages and drops the deepest extra ones (RepDistiller's
    ``zip``); ``"end"`` pairs the deepest and drops the shallowest extra ones (mdistiller OFD).
    """
    n = min(n_s, n_t)
    if align == "start":
        return [(i, i) for i in range(n)]
    if align == "end":
        return [(n_s - n + i, n_t - n + i) for i in range(n)]
    raise ValueError(f"align must be 'start' or 'end', got {align!r}")


class ConvBNConnector(nn.Sequential):
    """OFD connector: ``Conv2d(C_s→C_t, k×k, no bias)`` (normal, std ``√(2/(k²·C_t))``) + BN(γ=1, β=0)."""

    def __init__(self, s_channels: int, t_channels: int, kernel_size: int = 1) -> None:
        conv = nn.Conv2d(s_channels, t_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * t_channels)))
        bn = nn.BatchNorm2d(t_channels)
        nn.init.ones_(bn.weight)
        nn.init.zeros_(bn.bias)
        super().__init__(conv, bn)


class VIDRegressor(nn.Sequential):
    """VID mean predictor: ``conv1×1(C_s→mid) → ReLU → conv1×1(mid→mid) → ReLU → conv1×1(mid→C_t)``."""

    def __init__(self, s_channels: int, t_channels: int, mid_channels: int | None = None) -> None:
        mid = mid_channels or t_channels
        super().__init__(nn.Conv2d(s_channels, mid, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(mid, t_channels, 1, bias=False))


def feature_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Trainable parameters of ``model`` except those of its classifier (``taps.classifier``)."""
    head = get_taps(model).classifier
    for name, p in model.named_parameters():
        if p.requires_grad and not (name == head or name.startswith(head + ".")):
            yield p


def like(module: nn.Module, model: nn.Module) -> nn.Module:
    """``module`` moved to the device and dtype of ``model``'s first parameter."""
    p = next(model.parameters(), None)
    return module if p is None else module.to(device=p.device, dtype=p.dtype)


def stage_list(maps: list[Tensor], pairs: list[tuple[int, int]], side: int) -> list[Tensor]:
    """The maps of one side (0 = student, 1 = teacher) in pairing order."""
    return [maps[p[side]] for p in pairs]
