"""Relational and contrastive losses on batches of features: SP, CC, RKD, PKT and CRD's NCE.

Each function takes plain tensors (student side first) and returns an unweighted scalar; the
methods in :mod:`kdlab.methods` add the weights. Formulas follow methods.md §1.26–§1.30 (the
RepDistiller / mdistiller implementations, which agree with each other).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sp(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Similarity-preserving loss: ``‖norm_rows(Q_t Q_tᵀ) − norm_rows(Q_s Q_sᵀ)‖_F² / B²``.

    ``Q`` is the feature map flattened per sample (B×CHW); the batch Gram matrices are
    L2-normalised row by row (Tung & Mori 2019, eq. 2–4).
    """
    b = f_s.shape[0]
    q_s, q_t = f_s.reshape(b, -1), f_t.reshape(b, -1)
    g_s = F.normalize(q_s @ q_s.t(), p=2, dim=1)
    g_t = F.normalize(q_t @ q_t.t(), p=2, dim=1)
    return (g_t - g_s).pow(2).sum() / (b * b)


def cc(e_s: Tensor, e_t: Tensor) -> Tensor:
    """Correlation congruence as implemented in RepDistiller: ``mean_b Σ_d δ_b,d·δ_b+1,d``.

    ``δ = |e_s − e_t|`` over the embedded features; consecutive samples in batch order are paired.
    (The paper's version compares Taylor-approximated Gaussian-kernel correlation matrices; the
    reference code, and this function, do not.)
    """
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


def pairwise_distance(e: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """B×B Euclidean distances from squared norms, clamped at ``eps``, with a zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    return d * (1 - torch.eye(e.shape[0], device=e.device, dtype=d.dtype))


def rkd_distance(e_s: Tensor, e_t: Tensor) -> Tensor:
    """RKD-D: SmoothL1 between the pairwise distances, each divided by its mean positive entry."""
    e_s, e_t = e_s.flatten(1), e_t.flatten(1)
    with torch.no_grad():
        d_t = pairwise_distance(e_t)
        d_t = d_t / d_t[d_t > 0].mean()
    d_s = pairwise_distance(e_s)
    d_s = d_s / d_s[d_s > 0].mean()
    return F.smooth_l1_loss(d_s, d_t)


def _angles(e: Tensor) -> Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [j, i] = normalize(e_i − e_j)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)  # cos of angle i-j-k for every (j, i, k)


def rkd_angle(e_s: Tensor, e_t: Tensor) -> Tensor:
    """RKD-A: SmoothL1 between the cosines of every triplet angle ∠(e_i, e_j, e_k) (B³ of them)."""
    e_s, e_t = e_s.flatten(1), e_t.flatten(1)
    with torch.no_grad():
        a_t = _angles(e_t)
    return F.smooth_l1_loss(_angles(e_s), a_t)


def rkd(e_s: Tensor, e_t: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0) -> Tensor:
    """Relational KD: ``distance_weight·RKD-D + angle_weight·RKD-A`` (Park et al. 2019)."""
    return distance_weight * rkd_distance(e_s, e_t) + angle_weight * rkd_angle(e_s, e_t)


def _cosine_conditional(x: Tensor, eps: float) -> Tensor:
    x = x.flatten(1)
    x = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    x = torch.nan_to_num(x, nan=0.0)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt(f_s: Tensor, f_t: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer: KL-like divergence of cosine-kernel conditionals.

    Rows are L2-normalised, ``K' = (XXᵀ + 1)/2`` row-normalised to ``P``; the loss is the mean over
    all (i, j) of ``P^t_ij·log((P^t_ij + eps)/(P^s_ij + eps))`` (Passalis & Tefas 2018).
    """
    p_s, p_t = _cosine_conditional(f_s, eps), _cosine_conditional(f_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def crd_nce(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """CRD's NCE loss (Tian et al. 2020, eq. 18) on B×(K+1) normalised scores, the positive first.

    With ``m = K`` and noise ``Pn = 1/num_data``: ``−(1/B) Σ_b [log(x⁺/(x⁺ + m·Pn + eps)) +
    Σ_neg log(m·Pn/(x⁻ + m·Pn + eps))]``.
    """
    b, m = scores.shape[0], scores.shape[1] - 1
    noise = m / num_data
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + eps))
    log_d0 = torch.log(noise / (neg + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / b
