"""Losses on a student that saw a mixed input (mixup, three-way mixup, CutMix as KD baselines).

The student's logits on ``Σ_k λ_k x_k`` are compared with each source k's hard label and with
the teacher's logits of each *un-mixed* source image, λ-weighted (alextxu/ckd
``helper/MixupTrainHelpers.py``, ``CutMixHelpers.py`` and, in commit 62ba741,
``MixupThreeTrainHelpers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.logit import kd

MIX_LOSS_FNS = ("ce", "kl")


def mixed_ce(logits: Tensor, targets: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``Σ_k λ_k · CE(z, y_k)`` with batch-mean cross-entropies."""
    if len(targets) != len(weights):
        raise ValueError(f"{len(targets)} label sets but {len(weights)} weights")
    z = logits.float()
    return sum(float(w) * F.cross_entropy(z, y) for w, y in zip(weights, targets))


def mixed_distill(logits_s: Tensor, teacher_logits: Sequence[Tensor], weights: Sequence[float],
                  loss_fn: str = "ce", temperature: float = 4.0) -> Tensor:
    """``Σ_k λ_k · D(z_s, z_t,k)``; the teacher side is detached.

    ``loss_fn="ce"`` (CompKD's ``--loss_fn 0``, its default): D is the soft-target cross-entropy
    at T=1, ``mean_i −Σ_c softmax(z_t,k)_ic · log_softmax(z_s)_ic``. ``"kl"`` (``--loss_fn 1``):
    D is Hinton KD at ``temperature`` (T²-scaled, batch-mean KL), as used for the KD term too.
    """
    if loss_fn not in MIX_LOSS_FNS:
        raise ValueError(f"loss_fn must be one of {MIX_LOSS_FNS}, got {loss_fn!r}")
    if len(teacher_logits) != len(weights):
        raise ValueError(f"{len(teacher_logits)} teacher logit sets but {len(weights)} weights")
    zs = logits_s.float()
    total = 0.0
    for w, zt in zip(weights, teacher_logits):
        zt = zt.detach().float()
        if loss_fn == "ce":
            d = -(F.softmax(zt, dim=1) * F.log_softmax(zs, dim=1)).sum(dim=1).mean()
        else:
            d = kd(zs, zt, temperature)
        total = total + float(w) * d
    return total
