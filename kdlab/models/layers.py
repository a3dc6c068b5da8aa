"""Small parameter-free building blocks and weight initialisers shared by the zoo files."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (ShuffleNet): view as g x C/g, transpose, flatten."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ZeroPadShortcut(nn.Module):
    """Option-A residual shortcut (He et al. 2016): subsample by ``stride``, zero-pad the channels.

    The new channels are split evenly before and after the existing ones, as in the
    akamaster/pytorch_resnet_cifar10 models. It has no parameters.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_planes - in_planes
        self.pad_front = extra // 2
        self.pad_back = extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


def init_kaiming_fan_out(model: nn.Module) -> None:
    """He-normal (fan_out) convs, BN weight 1 / bias 0 (RepDistiller ResNets)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_normal_fan_out(model: nn.Module, linear_std: float | None = None) -> None:
    """Convs ~ N(0, 2/(k*k*out)), conv biases 0, BN 1/0, linear biases 0 (WRN, VGG, MobileNetV2).

    ``linear_std`` also re-draws linear weights from N(0, linear_std^2) (VGG, MobileNetV2).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
