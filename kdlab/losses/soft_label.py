"""WSLD (Zhou et al., ICLR 2021): soft-label distillation weighted per sample by a bias–variance term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def wsld(logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float = 4.0,
         alpha: float = 2.25) -> Tensor:
    """Weighted soft labels: ``alpha·T²·mean_i(w_i · softCE_i)``.

    ``softCE_i = −Σ_c softmax(z_t,i/T)_c · log_softmax(z_s,i/T)_c`` and
    ``w_i = 1 − exp(−max(CE(z_s,i, y_i) / (CE(z_t,i, y_i) + 1e-7), 0))``, the two hard-label CEs at
    T=1 on detached logits (yzd-v/cls_KD ``wsld.py``; the ``max(·, 0)`` is a no-op kept for
    fidelity). The teacher side is detached. Defaults are CIFAR's (T=4, alpha 2.25); ImageNet uses
    T=2, alpha 2.5.
    """
    t = temperature
    zs, zt = logits_s.float(), logits_t.detach().float()
    soft_ce = -(F.softmax(zt / t, dim=1) * F.log_softmax(zs / t, dim=1)).sum(dim=1)
    ce_s = F.cross_entropy(zs.detach(), target, reduction="none")
    ce_t = F.cross_entropy(zt, target, reduction="none")
    weight = 1 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0))
    return alpha * t * t * (weight * soft_ce).mean()
