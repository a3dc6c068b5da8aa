"""CIFAR variants of ResNet18 and ResNet50 (RepDistiller ``resnetv2.py``, mdistiller ``resnetv2.py``).

torchvision-style BasicBlock [2,2,2,2] / Bottleneck [3,4,6,3] stages at widths 64-128-256-512, but a
CIFAR stem: conv3x3 (stride 1) + BN + ReLU and no max-pool, so a 32x32 input keeps 32x32 through
``layer1``. Module names follow the references (``conv1, bn1, layer{1..4}.{i}.{conv*,bn*,shortcut},
linear``) so their checkpoints load as they are. The references already pool adaptively.

Every ReLU is its own non-inplace ``nn.ReLU`` (``relu_out`` closes a block); these have no
parameters, so the state dict is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.features import Taps
from kdlab.models.layers import init_kaiming_fan_out
from kdlab.models.registry import register_model


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; identity or 1x1-conv + BN shortcut; closing ``relu_out``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride)
        self.relu_out = nn.ReLU()

    def last_bn(self) -> str:
        return "bn2"

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu_out(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, each with BN; closing ``relu_out``."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = _projection(in_planes, out_planes, stride)
        self.relu_out = nn.ReLU()

    def last_bn(self) -> str:
        return "bn3"

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu_out(out + self.shortcut(x))


class CifarResNetV2(nn.Module):
    """Four-stage ResNet with a stride-1 conv3x3 stem (no max-pool) for 32x32 inputs."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], num_blocks: tuple[int, int, int, int],
                 num_classes: int = 100, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

        init_kaiming_fan_out(self)
        if zero_init_residual:  # start each residual branch at zero (Goyal et al. 2017)
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(getattr(m, m.last_bn()).weight)

        ends = [f"layer{s}.{n - 1}" for s, n in zip((1, 2, 3, 4), num_blocks)]
        bn = self.layer1[0].last_bn()
        self.taps = Taps(
            stages=("relu", "layer1", "layer2", "layer3", "layer4"),
            preact=("relu:in", *(f"{e}.relu_out:in" for e in ends)),
            classifier="linear",
            bn_before_relu=tuple(f"{e}.{bn}" for e in ends),
        )

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.avgpool(x), 1))


@register_model("ResNet18")
def resnet18_cifar(num_classes: int = 100, *, zero_init_residual: bool = False) -> CifarResNetV2:
    """ResNet18, CIFAR stem (mdistiller's student)."""
    return CifarResNetV2(BasicBlock, (2, 2, 2, 2), num_classes, zero_init_residual)


@register_model("ResNet50")
def resnet50_cifar(num_classes: int = 100, *, zero_init_residual: bool = False) -> CifarResNetV2:
    """ResNet50, CIFAR stem (the RepDistiller/CRD teacher)."""
    return CifarResNetV2(Bottleneck, (3, 4, 6, 3), num_classes, zero_init_residual)
