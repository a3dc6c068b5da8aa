"""NKD and USKD losses (Yang et al., ICCV 2023): normalized non-target KD and customized soft labels.

Both follow yzd-v/cls_KD (``mmcls/models/dis_losses/nkd.py`` and ``uskd.py``) for hard (class
index) labels. Reductions: per-sample sums over classes, then the mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def drop_target(x: Tensor, target: Tensor) -> Tensor:
    """``x`` (B×C) without its ground-truth column: B×(C−1), the other columns kept in order."""
    n, c = x.shape
    keep = torch.ones(n, c, dtype=torch.bool, device=x.device).scatter_(1, target.view(-1, 1), False)
    return x[keep].view(n, c - 1)


def nkd(logits_s: Tensor, logits_t: Tensor, target: Tensor, temperature: float = 3.0,
        gamma: float = 3.5) -> Tensor:
    """Normalized KD: ``L_target + L_non`` (the CE term is added by the method).

    * ``L_target = −mean_i t_i,gt · log s_i,gt`` with ``t = softmax(z_t)``, ``s = softmax(z_s)``
      at T=1 whatever ``temperature`` is (as in the reference).
    * ``L_non = −gamma·T²·mean_i Σ_k softmax(z̃_t/T)_k · log_softmax(z̃_s/T)_k`` where ``z̃`` drops
      the ground-truth column, i.e. the non-target distributions renormalised over C−1 classes.

    The teacher side is detached. Defaults are the cls_KD CIFAR-100 config (T=3, gamma=3.5); its
    ImageNet CNN configs (and ``NKDLoss``'s own defaults) use T=1, gamma=1.5; DeiT pairs T=1, gamma=1.
    """
    zs, zt = logits_s.float(), logits_t.detach().float()
    y = target.view(-1, 1)
    log_s_gt = F.log_softmax(zs, dim=1).gather(1, y).squeeze(1)
    t_gt = F.softmax(zt, dim=1).gather(1, y).squeeze(1)
    loss_target = -(t_gt * log_s_gt).mean()
    t = temperature
    log_q_s = F.log_softmax(drop_target(zs, target) / t, dim=1)
    q_t = F.softmax(drop_target(zt, target) / t, dim=1)
    loss_non = -gamma * t * t * (q_t * log_q_s).sum(dim=1).mean()
    return loss_target + loss_non


def zipf_non_target_labels(logits: Tensor, aux_logits: Tensor, target: Tensor,
                           rank_on_log_softmax: bool = True) -> Tensor:
    """USKD's Zipf soft labels over the non-target classes (B×(C−1), rows sum to 1, no gradient).

    Every class (the ground truth included) is ranked by
    ``r = softmax(w)/(1 − softmax(w)_gt + 1e-6) + f/(1 − f_gt + 1e-6)``, where ``w`` are the
    auxiliary (weak) logits and ``f`` is the student's **log**-softmax as implemented in the
    reference (``rank_on_log_softmax=True``; ``False`` uses the softmax, the paper's reading).
    The class at rank k (1 = largest r) gets 1/k; the ground-truth column is then dropped and the
    rest renormalised, so the non-target weights keep the gap left by the ground truth's rank.
    Ties are broken by class index (the reference's unstable sort leaves them arbitrary).
    """
    with torch.no_grad():
        z, w = logits.detach().float(), aux_logits.detach().float()
        y = target.view(-1, 1)
        p_w = F.softmax(w, dim=1)
        f = F.log_softmax(z, dim=1) if rank_on_log_softmax else F.softmax(z, dim=1)
        score = p_w / (1 - p_w.gather(1, y) + 1e-6) + f / (1 - f.gather(1, y) + 1e-6)
        n, c = score.shape
        order = torch.argsort(score, dim=1, descending=True, stable=True)
        ranks = torch.arange(1, c + 1, device=z.device, dtype=torch.float32).expand(n, c)
        rank = torch.empty_like(score).scatter_(1, order, ranks)  # rank[i, class] in 1..C
        zipf = drop_target(1.0 / rank, target)
        return zipf / zipf.sum(dim=1, keepdim=True)


def uskd_parts(logits: Tensor, aux_logits: Tensor, target: Tensor, label_smoothing: float = 0.1,
               rank_on_log_softmax: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The three unweighted USKD terms ``(L_t, L_non, L_weak)`` for hard labels.

    * ``L_t = −mean_i q_i · log softmax(z_i)_gt`` with the detached target soft label
      ``q = p_gt² + 1 − mean_batch(p_gt²)``, ``p = softmax(z)``.
    * ``L_non = −mean_i Σ_k zipf_ik · log_softmax(z̃_i)_k`` (T=1; see
      :func:`zipf_non_target_labels`).
    * ``L_weak`` = cross-entropy of the auxiliary logits against the label smoothed as
      ``(1−ls)·onehot + ls/C`` (the reference writes 0.9·onehot + 0.1/C).
    """
    z, w = logits.float(), aux_logits.float()
    y = target.view(-1, 1)
    log_p = F.log_softmax(z, dim=1)
    p_gt2 = log_p.gather(1, y).squeeze(1).detach().exp() ** 2
    q = p_gt2 + 1 - p_gt2.mean()
    loss_t = -(q * log_p.gather(1, y).squeeze(1)).mean()
    c = z.shape[1]
    smooth = torch.full_like(w, label_smoothing / c).scatter_add_(
        1, y, torch.full_like(w[:, :1], 1.0 - label_smoothing))
    loss_weak = -(smooth * F.log_softmax(w, dim=1)).sum(dim=1).mean()
    zipf = zipf_non_target_labels(z, w, target, rank_on_log_softmax)
    loss_non = -(zipf * F.log_softmax(drop_target(z, target), dim=1)).sum(dim=1).mean()
    return loss_t, loss_non, loss_weak


def uskd(logits: Tensor, aux_logits: Tensor, target: Tensor, alpha: float = 0.1, beta: float = 0.1,
         mu: float = 0.1, label_smoothing: float = 0.1, rank_on_log_softmax: bool = True) -> Tensor:
    """USKD: ``alpha·L_t + beta·L_non + mu·L_weak`` (:func:`uskd_parts`); CE is added by the method.

    Defaults are the cls_KD CIFAR-100 config (alpha 0.1, beta 0.1, mu 0.1); its ImageNet configs
    use alpha 1, beta 0.1, mu 0.005.
    """
    loss_t, loss_non, loss_weak = uskd_parts(logits, aux_logits, target, label_smoothing,
                                             rank_on_log_softmax)
    return alpha * loss_t + beta * loss_non + mu * loss_weak
