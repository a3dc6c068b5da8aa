"""CIFAR ResNets (He et al. 2016): post-activation BasicBlocks, depth 6n+2, three stages.

Registered as ``resnet8/14/20/32/44/56/110`` (widths 16-16-32-64) and ``resnet8x4``/``resnet32x4``
(widths 32-64-128-256), with the module names of RepDistiller/mdistiller ``models/resnet.py``
(``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}, fc``), so their
checkpoints load as they are.

``shortcut="B"`` (default, as in the KD references): a 1x1 conv + BN shortcut wherever the shape
changes. ``shortcut="A"``: the parameter-free subsample-and-zero-pad shortcut of
akamaster/pytorch_resnet_cifar10; that variant names its classifier ``linear`` (as akamaster does)
so those checkpoints load with ``strict=True`` without any key mapping.

Differences from the references, none of which changes a parameter: every ReLU is its own
non-inplace ``nn.ReLU`` module (the block's closing one is ``relu_out``, so ``"...relu_out:in"``
is the block's pre-activation), and the fixed ``AvgPool2d(8)`` is ``AdaptiveAvgPool2d(1)``, so
the models run at any input size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.features import Taps
from kdlab.models.layers import ZeroPadShortcut, init_kaiming_fan_out
from kdlab.models.registry import register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the shortcut, then ``relu_out``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.downsample = ZeroPadShortcut(in_planes, planes, stride)
            else:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu_out(out + identity)


class CifarResNet(nn.Module):
    """Stem conv3x3-BN-ReLU, three stages of ``n`` BasicBlocks, global average pool, linear."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100,
                 shortcut: str = "B") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise KdlabError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise KdlabError(f"shortcut must be 'A' (zero-pad) or 'B' (1x1 conv + BN), got {shortcut!r}")
        n = (depth - 2) // 6
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(widths[1], n, 1, shortcut)
        self.layer2 = self._make_layer(widths[2], n, 2, shortcut)
        self.layer3 = self._make_layer(widths[3], n, 2, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        head = nn.Linear(widths[3], num_classes)
        classifier = "linear" if shortcut == "A" else "fc"
        setattr(self, classifier, head)
        self.classifier_name = classifier

        last = n - 1
        self.taps = Taps(
            stages=("relu", "layer1", "layer2", "layer3"),
            preact=("relu:in", *(f"layer{s}.{last}.relu_out:in" for s in (1, 2, 3))),
            classifier=classifier,
            bn_before_relu=tuple(f"layer{s}.{last}.bn2" for s in (1, 2, 3)),
        )
        if shortcut == "A":  # akamaster's initialisation: He-normal (fan_in) convs and linear
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight)
        else:
            init_kaiming_fan_out(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self.in_planes, planes, stride if i == 0 else 1, shortcut))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return getattr(self, self.classifier_name)(x)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _register(name: str, depth: int, widths: tuple[int, int, int, int]) -> None:
    def factory(num_classes: int = 100, *, shortcut: str = "B") -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, shortcut=shortcut)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR ResNet-{depth}, widths {widths}; ``shortcut`` 'B' (conv) or 'A' (zero-pad)."
    register_model(name)(factory)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, _NARROW)
_register("resnet8x4", 8, _WIDE)
_register("resnet32x4", 32, _WIDE)
