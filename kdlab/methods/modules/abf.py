"""ReviewKD's attention-based fusion (ABF) and the review chain built from per-level ABFs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ABF(nn.Module):
    """One review level: conv1×1-BN to ``mid``, optional fusion with the deeper residual, resize, conv3×3-BN.

    Fusion (every level except the deepest): the residual is nearest-resized to this level's
    size, concatenated with the conv1 output, and a conv1×1 (2·mid→2) + sigmoid gives two spatial
    attention maps: ``x = x·a₀ + residual·a₁``. If the result's size is not ``out_size`` (the
    teacher's map) it is nearest-resized. ``conv2`` gives the output (teacher channels); the fused
    map is handed to the next, shallower level. Conv weights use kaiming-uniform with ``a=1``.
    """

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, mid, kernel_size=1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, c_out, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


class ReviewChain(nn.Module):
    """ABFs for levels listed shallow → deep; :meth:`forward` runs deep → shallow and returns outputs shallow → deep.

    ``mid`` defaults to ``min(512, C_in of the deepest level)`` (as both references compute it).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], mid: int | None = None) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError("in_channels and out_channels must have one entry per level")
        mid = min(512, in_channels[-1]) if mid is None else mid
        self.mid = mid
        n = len(in_channels)
        self.abfs = nn.ModuleList(ABF(c_in, mid, c_out, fuse=i < n - 1)
                                  for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels, strict=True)))

    def forward(self, feats: Sequence[Tensor], out_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        outs: list[Tensor] = []
        residual = None
        for i in reversed(range(len(self.abfs))):
            out, residual = self.abfs[i](feats[i], residual, out_sizes[i])
            outs.insert(0, out)
        return outs
