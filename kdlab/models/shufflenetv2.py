"""ShuffleNet V2 for CIFAR (RepDistiller/mdistiller/SimKD ``ShuffleNetv2.py``).

Registered as ``ShuffleV2`` (net size 1: widths 116/232/464, head 1024) and ``ShuffleV2_1_5``
(SimKD: 176/352/704, head 1024); 3/7/3 basic blocks, each stage opened by a stride-2 down block.
Stem conv1x1 3->24 + BN + ReLU (no pooling); head conv1x1 to 1024 + BN + ReLU, global average pool,
``linear``. Module names follow the reference (``conv1, bn1, layer{1,2,3}.{i}.{conv*,bn*}, conv2,
bn2, linear``), so its checkpoints load as they are.

Basic block: split the channels in half, transform the second half (1x1-BN-ReLU, depthwise 3x3-BN,
1x1-BN), concatenate with the untouched first half, shuffle. The reference applies the closing ReLU
to the transformed half before the concatenation. Here the concatenation and shuffle come first and
the closing ReLU (module ``relu_out``) acts on the whole tensor. Outputs and gradients are identical:
the untouched half is the output of an earlier block, hence already >= 0, and ReLU leaves it as is.
This gives a natural pre-activation tap, ``"layerK.{last}.relu_out:in"``, laid out channel for
channel like the stage output, so ``relu(preact) == stage`` (the reference's "preact" is the
concatenation before the shuffle, i.e. in another channel order). No single BN feeds the closing
ReLU (half of its input bypasses the block), so ``bn_before_relu`` is empty.
The reference's ``F.avg_pool2d(out, 4)`` is ``AdaptiveAvgPool2d(1)`` here; the pooled embedding
(classifier input) is the 1024-d head output, not the last stage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.features import Taps
from kdlab.models.layers import ChannelShuffle
from kdlab.models.registry import register_model

CONFIGS: dict[float, tuple[tuple[int, int, int, int], tuple[int, int, int]]] = {
    1.0: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
}


class SplitBlock(nn.Module):
    """Split the channels at ``ratio``: returns (first part, second part)."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = int(x.size(1) * self.ratio)
        return x[:, :c], x[:, c:]


class BasicBlock(nn.Module):
    """Channel-split unit: half passes, half goes 1x1 - dw3x3 - 1x1; concat, shuffle, ``relu_out``."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split = SplitBlock(split_ratio)
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ChannelShuffle(2)
        self.relu_out = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.split(x)
        out = self.relu(self.bn1(self.conv1(x2)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        return self.relu_out(self.shuffle(torch.cat([x1, out], 1)))


class DownBlock(nn.Module):
    """Stride-2 unit: two branches (dw3x3-1x1 and 1x1-dw3x3-1x1) concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=1,
                               groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = self.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.relu(self.bn3(self.conv3(x)))
        right = self.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """Stem, three stages (down block + basic blocks), 1x1 head conv, pool, ``linear``."""

    def __init__(self, net_size: float = 1.0, num_classes: int = 100) -> None:
        super().__init__()
        widths, num_blocks = CONFIGS[net_size]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_channels = 24
        self.layer1 = self._make_layer(widths[0], num_blocks[0])
        self.layer2 = self._make_layer(widths[1], num_blocks[1])
        self.layer3 = self._make_layer(widths[2], num_blocks[2])
        self.conv2 = nn.Conv2d(widths[2], widths[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)

        # index 0 of each layer is the down block, so its last basic block has index num_blocks
        ends = [f"layer{s}.{n}" for s, n in zip((1, 2, 3), num_blocks)]
        self.taps = Taps(
            stages=("relu", "layer1", "layer2", "layer3"),
            preact=("relu:in", *(f"{e}.relu_out:in" for e in ends)),
            classifier="linear",
            bn_before_relu=(),
        )

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        layers: list[nn.Module] = [DownBlock(self.in_channels, out_channels)]
        layers += [BasicBlock(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


@register_model("ShuffleV2")
def shufflev2(num_classes: int = 100) -> ShuffleNetV2:
    """ShuffleNet V2 x1.0 (widths 116/232/464, head 1024)."""
    return ShuffleNetV2(1.0, num_classes)


@register_model("ShuffleV2_1_5")
def shufflev2_1_5(num_classes: int = 100) -> ShuffleNetV2:
    """ShuffleNet V2 x1.5 (SimKD; widths 176/352/704, head 1024)."""
    return ShuffleNetV2(1.5, num_classes)
