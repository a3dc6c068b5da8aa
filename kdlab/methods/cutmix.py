"""CutMix as a KD baseline (Comparative KD's ``cutmix``): a partner's box pasted into each image."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdlab.methods.mixup import COMPKD, Mixup
from kdlab.methods.registry import register_method


def cutmix_box(height: int, width: int, lam: float, cx: int, cy: int) -> tuple[int, int, int, int]:
    """``(y1, y2, x1, x2)`` of the pasted box, as the official CutMix code computes it.

    The box has sides ``int(W·sqrt(1−λ))`` × ``int(H·sqrt(1−λ))`` centred on ``(cx, cy)``, each
    side as ``c ± side // 2`` clipped to the image (so it can be one pixel short, or cut by the
    border).
    """
    r = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * r), int(height * r)
    x1, x2 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    y1, y2 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    return y1, y2, x1, x2


@register_method("cutmix", paper=COMPKD + "; CutMix: Yun et al., ICCV 2019")
class CutMix(Mixup):
    """CutMix KD baseline: a partner's box pasted in, λ = kept-area ratio weights CE and soft-target CE.

    After alextxu/ckd ``helper/CutMixHelpers.py`` (itself after clovaai/CutMix-PyTorch): λ ~
    Beta(1, 1) once per batch sets the box size (:func:`cutmix_box`), its centre is uniform over
    the pixels, the same box is used for the whole batch, and λ is then recomputed as the exact
    kept-area ratio ``1 − box_area / (H·W)``; the losses are those of
    :class:`~kdlab.methods.mixup.Mixup` with that λ (same hyper-parameters; ``lam`` fixes the
    λ that sizes the box). Differences: partners come from the batch (one random permutation;
    CompKD precomputes up to 100k distinct pairs over the (sub)set); the reference ignores the
    KD weight for CutMix (its KD term is always 0) while here ``w_kd > 0`` adds it, default 0 as
    there; the reference's unused first λ draw is not made. Shipped recipes: see
    :class:`~kdlab.methods.mixup.Mixup`.
    """

    def mix(self, images: Tensor, partners: Tensor) -> tuple[Tensor, list[float]]:
        lam = self.draw_weights()[0]
        h, w = images.shape[-2:]
        cx, cy = int(torch.randint(w, ())), int(torch.randint(h, ()))
        y1, y2, x1, x2 = cutmix_box(h, w, lam, cx, cy)
        mixed = images[partners[0]].clone()
        mixed[..., y1:y2, x1:x2] = images[partners[1]][..., y1:y2, x1:x2]
        kept = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
        return mixed, [kept, 1.0 - kept]
