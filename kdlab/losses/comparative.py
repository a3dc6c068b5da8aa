"""Comparative KD losses (Wilf et al., CompKD): match differences of logits between sample groups."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdlab.losses.logit import kd

COMBINE_MODES = ("ckd", "ckd_add", "ckd_mixup")
COMPARATIVE_LOSS_FNS = ("mse", "kl")


def combine_groups(x: Tensor, pos: int, mode: str = "ckd", lam: float = 0.5) -> Tensor:
    """``B × k × C`` per-tuple rows -> ``B × C``: the positives' mean against the negatives' mean.

    ``ckd``: ``mean(x[:, :pos]) − mean(x[:, pos:])``; ``ckd_add``: their average;
    ``ckd_mixup``: ``lam·mean_P + (1 − lam)·mean_Q`` (CompKD's ``mix_func``).
    """
    a, b = x[:, :pos].mean(dim=1), x[:, pos:].mean(dim=1)
    if mode == "ckd":
        return a - b
    if mode == "ckd_add":
        return 0.5 * a + 0.5 * b
    if mode == "ckd_mixup":
        return lam * a + (1.0 - lam) * b
    raise ValueError(f"mode must be one of {', '.join(COMBINE_MODES)}, got {mode!r}")


def comparative(logits_s: Tensor, logits_t: Tensor, target: Tensor, pos: int, *, mode: str = "ckd",
                lam: float = 0.5, loss_fn: str = "mse", temperature: float = 4.0) -> dict[str, Tensor]:
    """Unweighted CompKD terms from per-tuple logits (``B × k × C``) and labels (``B × k``).

    With ``Δz^s``, ``Δz^t`` and ``Δy`` the group combinations (:func:`combine_groups`) of the
    student logits, the teacher logits and the one-hot labels, returns ``cls = D(Δz^s, Δy)``,
    ``rel = D(Δz^s, Δz^t)`` and ``kd = KD_τ(Δz^s, Δz^t)``. ``D`` is the mean squared error
    (``loss_fn="mse"``, CompKD at HEAD: ``nn.MSELoss``, mean over batch and classes) or the
    τ²-scaled KL of KD (``"kl"``, CompKD's first release used ``DistillKL`` for both).
    """
    if loss_fn not in COMPARATIVE_LOSS_FNS:
        raise ValueError(f"loss_fn must be one of {', '.join(COMPARATIVE_LOSS_FNS)}, got {loss_fn!r}")
    zs = combine_groups(logits_s.float(), pos, mode, lam)
    zt = combine_groups(logits_t.detach().float(), pos, mode, lam)
    y = combine_groups(F.one_hot(target, logits_s.shape[-1]).float(), pos, mode, lam)
    if loss_fn == "mse":
        cls, rel = F.mse_loss(zs, y), F.mse_loss(zs, zt)
    else:
        cls, rel = kd(zs, y, temperature), kd(zs, zt, temperature)
    return {"cls": cls, "rel": rel, "kd": kd(zs, zt, temperature)}
