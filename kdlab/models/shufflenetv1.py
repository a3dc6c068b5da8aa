"""ShuffleNet V1 for CIFAR (RepDistiller/mdistiller ``ShuffleNetv1.py``): registered as ``ShuffleV1``.

Groups 3, stage widths 240/480/960 with 4/8/4 bottlenecks, stem conv1x1 3->24 + BN + ReLU (stride
1, no pooling). A bottleneck is grouped 1x1 conv (ungrouped when its input is the 24-channel stem),
channel shuffle, depthwise 3x3, grouped 1x1; the first block of a stage has stride 2 and
concatenates an avg-pooled copy of its input, the others add their input. Module names follow the
reference (``conv1, bn1, layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}, linear``), so its
checkpoints load as they are.

Taps (the references give none of these, we provide them): the closing ReLU of every block is the
module ``relu_out``, so ``"layerK.{last}.relu_out:in"`` is the stage's pre-activation (the sum
``bn3 + input`` of its last, stride-1 block). ``bn_before_relu`` names that block's ``bn3``, whose
output is added to the input and feeds the ReLU (the same role as ``bn2`` in a CIFAR ResNet).
The reference's ``F.avg_pool2d(out, 4)`` is ``AdaptiveAvgPool2d(1)`` here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.features import Taps
from kdlab.models.layers import ChannelShuffle
from kdlab.models.registry import register_model


class ShuffleBottleneck(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1, then add (stride 1) or concat (stride 2)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        g = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ChannelShuffle(g)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.shuffle1(self.relu(self.bn1(self.conv1(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return self.relu_out(out)


class ShuffleNetV1(nn.Module):
    """Stem, three shuffle stages, global average pool, ``linear``."""

    def __init__(self, out_planes: tuple[int, int, int], num_blocks: tuple[int, int, int], groups: int,
                 num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[2], num_classes)

        ends = [f"layer{s}.{n - 1}" for s, n in zip((1, 2, 3), num_blocks)]
        self.taps = Taps(
            stages=("relu", "layer1", "layer2", "layer3"),
            preact=("relu:in", *(f"{e}.relu_out:in" for e in ends)),
            classifier="linear",
            bn_before_relu=tuple(f"{e}.bn3" for e in ends),
        )

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            # the stride-2 first block concatenates its pooled input, so its branch makes the rest
            branch = out_planes - self.in_planes if i == 0 else out_planes
            layers.append(ShuffleBottleneck(self.in_planes, branch, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


@register_model("ShuffleV1")
def shufflev1(num_classes: int = 100) -> ShuffleNetV1:
    """ShuffleNet V1, groups 3, widths 240/480/960, blocks 4/8/4."""
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes)
