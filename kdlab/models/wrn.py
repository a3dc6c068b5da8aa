"""Wide ResNets (Zagoruyko & Komodakis 2016) as used by CRD/mdistiller: ``wrn_16_1 ... wrn_40_2``.

Pre-activation blocks (BN-ReLU-conv twice), depth 6n+4, widths 16, 16w, 32w, 64w, a 1x1 conv
shortcut (no BN) when the width changes, then a final BN + ReLU + global average pool + ``fc``.
Module names follow RepDistiller/mdistiller ``wrn.py`` (``conv1, block{1,2,3}.layer.{i}.{bn1,conv1,
bn2,conv2,convShortcut}, bn1, fc``) so their checkpoints load as they are.

As in the reference, a block whose width changes applies its ``bn1``/``relu1`` to the input and
feeds the activated tensor to both the branch and the shortcut.

Taps. The blocks end in a plain sum, so the stage outputs are **raw block sums** (not ReLU'd), as in
the references (methods.md pitfall 15). The "pre-activation" of a stage is the output of the BN that
comes next: the next group's first ``bn1``, and the final ``bn1`` for the last stage. We tap that
module's output instead of calling the BN a second time as mdistiller does (so running statistics are
updated once); the values are the same. ``bn_before_relu`` names those same BNs. The stem is a bare
conv, so ``preact[0] == stages[0]``.

The reference's ``F.avg_pool2d(out, 8)`` is ``AdaptiveAvgPool2d(1)`` here (same result at 32x32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.features import Taps
from kdlab.models.layers import init_normal_fan_out
from kdlab.models.registry import register_model


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, added to the (projected) input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of ``n`` wide blocks; only the first changes width/stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(
            WideBasicBlock(out_planes if i else in_planes, out_planes, 1 if i else stride, drop_rate)
            for i in range(n)
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen: conv3x3 stem, three groups, final BN-ReLU, pool, ``fc``."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise KdlabError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        init_normal_fan_out(self)

        next_bn = ("block2.layer.0.bn1", "block3.layer.0.bn1", "bn1")
        self.taps = Taps(
            stages=("conv1", "block1", "block2", "block3"),
            preact=("conv1", *next_bn),
            classifier="fc",
            bn_before_relu=next_bn,
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    def factory(num_classes: int = 100, *, drop_rate: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen, num_classes, drop_rate)

    factory.__name__ = name
    factory.__doc__ = f"WRN-{depth}-{widen} (dropout ``drop_rate``, 0 in the KD benchmarks)."
    register_model(name)(factory)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
