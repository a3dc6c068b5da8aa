"""ConvReg: the convolutional regressor that maps a student map onto a teacher map's shape.

FitNet's hint regressor and AB's connectors (RepDistiller ``models/util.py``; methods.md §1.11,
pitfalls 16 and 23). Given student ``C_s×H_s×W_s`` and teacher ``C_t×H_t×W_t``:

* ``H_s = 2·H_t``: conv 3×3, stride 2;
* ``2·H_s = H_t``: transposed conv 4×4, stride 2 (MobileNetV2's 16×16 stem against 32×32 maps);
* ``H_s ≥ H_t`` otherwise: conv with kernel ``(1 + H_s − H_t) × (1 + W_s − W_t)``;
* any other case (the student map smaller by a ratio other than 2): RepDistiller and mdistiller
  raise; here, as in SimKD's ConvReg, a 3×3 conv keeps the student's size and the **teacher** map is
  average-pooled down to it (:meth:`ConvReg.match_target`), so every pair works.

Then BatchNorm and (``use_relu=True``) ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class ConvReg(nn.Module):
    """Regress a student map (``s_shape``) to a teacher map (``t_shape``); shapes are ``(…, C, H, W)``."""

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int], use_relu: bool = True) -> None:
        super().__init__()
        s_c, s_h, s_w = (int(v) for v in s_shape[-3:])
        t_c, t_h, t_w = (int(v) for v in t_shape[-3:])
        self.target_size: tuple[int, int] | None = None
        if s_h == 2 * t_h and s_w == 2 * t_w:
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
            self.kind = "down2"
        elif 2 * s_h == t_h and 2 * s_w == t_w:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
            self.kind = "up2"
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
            self.kind = "kernel"
        else:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, padding=1)
            self.kind = "pool_teacher"
            self.target_size = (s_h, s_w)
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = use_relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x

    def match_target(self, t: Tensor) -> Tensor:
        """The teacher map as the regressor's output is compared with it (pooled if needed)."""
        if self.target_size is not None and tuple(t.shape[-2:]) != self.target_size:
            return F.adaptive_avg_pool2d(t, self.target_size)
        return t
