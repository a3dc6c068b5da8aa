"""MobileNetV2 for CIFAR as in CRD/RepDistiller (``mobile_half``): registered as ``MobileNetV2``.

Expansion T=6, **width 0.5**, inverted-residual settings (t, c, n, s) = (1,16,1,1), (6,24,2,1),
(6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1) with c scaled by the width; the stem
conv3x3 has **stride 2** (so the first map is 16x16 at 32x32 input, methods.md pitfall 16); the
1x1 expansion conv is present even when t=1; the last 1x1 conv keeps 1280 channels for width <= 1.
ReLU (not ReLU6) everywhere. Module names follow the reference (``conv1.{0,1}``,
``blocks.{g}.{i}.conv.{0..7}``, ``conv2.{0,1}``, ``classifier.0``), so its checkpoints load as they
are. ``width_mult=1.0`` gives SimKD's ``MobileNetV2_1_0``.

Taps: ``stages`` are the stem and the outputs of block groups 1, 2, 4 and 6 (as the reference's
f0..f4). Inverted residual blocks end **linearly** (1x1 conv + BN, no ReLU), so for f1..f4 there is
no ReLU to be "before": ``preact`` is the block output itself (``preact == stages``). For the stem
(conv-BN-ReLU) ``preact[0]`` is the input of its ReLU. ``bn_before_relu`` lists each group's last
BN (as the reference's ``get_bn_before_relu``), which shapes the linear block output.
The reference's ``AvgPool2d(H, ceil_mode=True)`` is ``AdaptiveAvgPool2d(1)`` here; the pooled
embedding (classifier input) is the 1280-d output of ``conv2``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.features import Taps
from kdlab.models.layers import init_normal_fan_out
from kdlab.models.registry import register_model

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup), nn.ReLU()
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, each with BN; residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 (stride-2 stem, 7 block groups, 1x1 conv to 1280, pool, linear)."""

    def __init__(self, num_classes: int = 100, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        in_ch = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_ch, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTINGS:
            t = expansion if t != 1 else 1
            out_ch = int(c * width_mult)
            group = []
            for i in range(n):
                group.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
            self.blocks.append(nn.Sequential(*group))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_ch, self.last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        init_normal_fan_out(self, linear_std=0.01)

        groups = (1, 2, 4, 6)
        self.taps = Taps(
            stages=("conv1", *(f"blocks.{g}" for g in groups)),
            preact=("conv1.2:in", *(f"blocks.{g}" for g in groups)),
            classifier="classifier",
            bn_before_relu=tuple(f"blocks.{g}.{SETTINGS[g][2] - 1}.conv.7" for g in groups),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        for group in self.blocks:
            out = group(out)
        out = self.conv2(out)
        return self.classifier(torch.flatten(self.avgpool(out), 1))


@register_model("MobileNetV2")
def mobilenetv2_cifar(num_classes: int = 100, *, width_mult: float = 0.5) -> MobileNetV2:
    """CRD's ``mobile_half`` (width 0.5); ``width_mult=1.0`` is SimKD's ``MobileNetV2_1_0``."""
    return MobileNetV2(num_classes, width_mult=width_mult)
