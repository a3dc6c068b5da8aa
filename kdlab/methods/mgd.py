"""MGD (Yang et al., ECCV 2022): masked generative distillation of the final feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.projectors import Generator, TapHook, prepool_point, to_device_of
from kdlab.methods.registry import register_method


def random_channel_mask(batch: int, channels: int, ratio: float, like: Tensor) -> Tensor:
    """B×C×1×1 mask, 0 with probability ``ratio``; drawn on the CPU from torch's global RNG as cls_KD."""
    mat = torch.rand((batch, channels, 1, 1))
    return (mat >= ratio).to(device=like.device, dtype=like.dtype)


@register_method("mgd", paper="Yang, Li, Shao, Shi, Yuan, Li, Masked Generative Distillation, ECCV 2022")
class MGD(Distiller):
    """MGD: CE + α·Σ(G(align(f_s)·M) − f_t)²/B, a random channel mask M and a conv generator G.

    Follows yzd-v/cls_KD ``mmcls/models/dis_losses/mgd.py`` for classification (methods.md §1.21):
    ``align`` is a conv1×1 with bias only when the channel counts differ, the generator is
    conv3×3-ReLU-conv3×3 on the teacher's channels, and the mask zeroes each channel of each
    sample with probability ``lambda_mgd`` (0.15), drawn from torch's global RNG (the spatial mask
    is commented out in the reference). Total = ``ce_weight``·CE + MGD, no KD.

    Features: cls_KD passes the backbone's last output, which for mmcls ResNets is the last stage
    and for mmcls MobileNetV2/ShuffleNetV2 includes the final 1×1 conv; kdlab takes the
    **pre-pool map** of each network (the map its classifier's global pool reads, see
    :func:`~kdlab.methods.modules.projectors.prepool_point`), which is the same thing. Differences:
    the reference asserts equal H×W; here the larger map is average-pooled to the smaller size so
    every pair works (MobileNetV2's 2×2 vs a 4×4 or 8×8 teacher map). The mask is drawn after the
    align conv, as in the reference.

    ``alpha_mgd`` defaults to 7e-5, the reference loss's default and its ImageNet setting; the
    cls_KD CIFAR-100 config (ResNet34→ResNet18) uses 0.0012, which the shipped CIFAR configs use.
    """

    needs = Needs.of(student={"logits"}, teacher={"logits", "pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, alpha_mgd: float = 7e-5,
                 lambda_mgd: float = 0.15, ce_weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if teacher is None:
            raise KdlabError("method 'mgd' needs a teacher")
        s_point, s_shape = prepool_point(student, image_size, "mgd", "student")
        t_point, t_shape = prepool_point(teacher, image_size, "mgd", "teacher")
        self._hook_s = TapHook(student, s_point)
        self._hook_t = TapHook(teacher, t_point)
        c_s, c_t = s_shape[0], t_shape[0]
        self.align = to_device_of(nn.Conv2d(c_s, c_t, kernel_size=1), student) if c_s != c_t else None
        self.generation = to_device_of(Generator(c_t), student)
        self.alpha_mgd = alpha_mgd
        self.lambda_mgd = lambda_mgd
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        fs, ft = self._hook_s.pop(), self._hook_t.pop()
        if self.align is not None:
            fs = self.align(fs)
        hs, ht = fs.shape[-2:], ft.shape[-2:]
        if hs != ht:
            size = (min(hs[0], ht[0]), min(hs[1], ht[1]))
            fs = F.adaptive_avg_pool2d(fs, size) if tuple(hs) != size else fs
            ft = F.adaptive_avg_pool2d(ft, size) if tuple(ht) != size else ft
        mask = random_channel_mask(fs.shape[0], fs.shape[1], self.lambda_mgd, fs)
        generated = self.generation(fs * mask)
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "mgd": self.alpha_mgd * losses.mgd(generated, ft),
        }
