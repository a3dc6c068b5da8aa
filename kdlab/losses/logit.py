"""Logit-level distillation losses as pure functions (no state, no modules).

All losses use the reference reductions: the KL divergence is summed over classes and averaged
over the batch ("batchmean"), then multiplied by T² (methods.md §4 item 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd(logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: ``T² · mean_i KL(softmax(z_t/T) ‖ softmax(z_s/T))``."""
    t = temperature
    log_p_s = F.log_softmax(logits_s.float() / t, dim=1)
    log_p_t = F.log_softmax(logits_t.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def dkd(logits_s: Tensor, logits_t: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0,
        temperature: float = 4.0) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): ``alpha·TCKD + beta·NCKD``, each ``T²``-scaled, batch-mean.

    TCKD is the KL between the binary (target, non-target) distributions; NCKD the KL between the
    distributions over the non-target classes. As in the reference, the non-target distribution is
    ``softmax(z/T − 1000·onehot)``. Unlike the reference, the binary log uses a clamp at 1e-12
    instead of a bare ``log`` so a saturated student gives a large finite loss, not NaN; the value
    is otherwise the same.
    """
    t = temperature
    zs, zt = logits_s.float() / t, logits_t.float() / t
    gt = F.one_hot(target, zs.shape[1]).to(zs.dtype)
    p_s, p_t = zs.softmax(dim=1), zt.softmax(dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1)
    tckd = F.kl_div(b_s.clamp_min(1e-12).log(), b_t, reduction="batchmean") * t * t
    nckd = F.kl_div(F.log_softmax(zs - 1000.0 * gt, dim=1), F.log_softmax(zt - 1000.0 * gt, dim=1),
                    reduction="batchmean", log_target=True) * t * t
    return alpha * tckd + beta * nckd
