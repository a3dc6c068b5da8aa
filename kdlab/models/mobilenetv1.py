"""MobileNetV1 (1.0, 224 px) as mdistiller defines it (``mdistiller/models/imagenet/mobilenetv1.py``).

The ImageNet student of the ResNet50 -> MobileNetV1 benchmark (methods.md §2.6, §3.1), registered
as ``MobileNetV1``. ``model`` is one Sequential, as in the reference, so its checkpoints load as
they are: ``model.0`` is the stem (conv3x3 3->32 stride 2 + BN + ReLU), ``model.1..13`` are
depthwise-separable blocks (dw conv3x3 + BN + ReLU, pw conv1x1 + BN + ReLU; indices ``0..5``),
widths 64, 128, 128, 256, 256, 512 (x6), 1024, 1024 with stride 2 at blocks 2, 4, 6 and 12; then
average pooling and ``fc`` (Linear 1024 -> classes). No conv has a bias; PyTorch's default
initialisation, as the reference (it has none of its own). 4,231,976 trainable parameters for
1000 classes (the published 4.2M).

Difference from the reference, on purpose: its ``AvgPool2d(7)`` (right only for 224 px input, a
7x7 final map) is ``AdaptiveAvgPool2d(1)`` here, identical at 224 px and usable at any size; its
``fc`` is always 1000-way, here ``num_classes`` (Places365: 365).

Taps: ``stages`` are the stem and the ends of blocks 3, 5, 11 and 13 (128x56², 256x28², 512x14²,
1024x7² at 224 px), the four maps of the reference's ``feats``; ``preact`` takes each of them at
the input of its closing ReLU (the reference's ``preact_feats``, used by mdistiller's ImageNet
ReviewKD and OFD); ``bn_before_relu`` is each stage end's last BN (``get_bn_before_relu``). The
pooled embedding is the 1024-d input of ``fc``. The reference's feature list has no stem entry;
kdlab's convention puts the stem first, and methods use ``stages[1:]``, the same four maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.features import Taps
from kdlab.models.registry import register_model

# (output channels, stride) of the 13 depthwise-separable blocks
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1))
STAGE_ENDS = (3, 5, 11, 13)  # indices into ``model`` of the reference's four feature maps


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU())


def _conv_dw(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp), nn.ReLU(),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(),
    )


class MobileNetV1(nn.Module):
    """mdistiller's ImageNet MobileNetV1: stem + 13 depthwise-separable blocks + pool + fc."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 2)]
        inp = 32
        for oup, stride in BLOCKS:
            layers.append(_conv_dw(inp, oup, stride))
            inp = oup
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, num_classes)
        self.taps = Taps(
            stages=("model.0", *(f"model.{i}" for i in STAGE_ENDS)),
            preact=("model.0.2:in", *(f"model.{i}.5:in" for i in STAGE_ENDS)),
            classifier="fc",
            bn_before_relu=tuple(f"model.{i}.4" for i in STAGE_ENDS),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


@register_model("MobileNetV1")
def mobilenetv1(num_classes: int = 1000) -> MobileNetV1:
    """mdistiller's ImageNet MobileNetV1 (width 1.0; 4.23M parameters at 1000 classes)."""
    return MobileNetV1(num_classes)
