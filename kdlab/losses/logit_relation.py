"""Batch-relational logit losses: DIST (Pearson relations) and CKD-SW (sample-wise InfoNCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CKD_NEGATIVES = ("teacher_student", "student_student")


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (cosine of mean-centred rows)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist(logits_s: Tensor, logits_t: Tensor, beta: float = 1.0, gamma: float = 1.0,
         temperature: float = 4.0) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022): ``τ²·(beta·inter + gamma·intra)`` on ``softmax(z/τ)``.

    ``inter = 1 − mean_i ρ(Y_s[i,:], Y_t[i,:])`` (per sample, across classes) and
    ``intra = 1 − mean_c ρ(Y_s[:,c], Y_t[:,c])`` (per class, across the batch), ρ the Pearson
    correlation with eps 1e-8 (hunto/image_classification_sota ``lib/models/losses/dist_kd.py``).
    The teacher side is detached. τ=4 is the CIFAR-100 setting (``kd: dist_t4``); ImageNet uses τ=1
    (``kd: dist``; older versions of ``dist_kd.py`` had no temperature, i.e. τ=1).
    """
    t = temperature
    ys = F.softmax(logits_s.float() / t, dim=1)
    yt = F.softmax(logits_t.detach().float() / t, dim=1)
    inter = 1 - pearson_rows(ys, yt).mean()
    intra = 1 - pearson_rows(ys.t(), yt.t()).mean()
    return t * t * (beta * inter + gamma * intra)


def ckd(logits_s: Tensor, logits_t: Tensor, temperature: float = 1.0,
        negatives: str = "teacher_student") -> Tensor:
    """CKD-SW sample-wise contrastive loss (InfoNCE over the batch, diagonal positive).

    Logits are L2-normalised per sample to ``t̂_i``, ``ŝ_j``. With ``negatives="teacher_student"``
    (ZhouXinzzzzz/CKD ``CKD.py``) row i of the B×B matrix is ``S_ij = ⟨t̂_i, ŝ_j⟩`` (teacher anchor,
    every student) and the loss is ``mean_i −log softmax(S_i/τ)_i``, one direction only.
    ``"student_student"`` is our reading of the paper's v2 text: the positive stays ``⟨t̂_i, ŝ_i⟩``
    but the negatives are ``⟨ŝ_i, ŝ_j⟩``, j≠i. The teacher side is detached.
    """
    if negatives not in CKD_NEGATIVES:
        raise ValueError(f"negatives must be one of {CKD_NEGATIVES}, got {negatives!r}")
    s = F.normalize(logits_s.float(), dim=1)
    t = F.normalize(logits_t.detach().float(), dim=1)
    if negatives == "teacher_student":
        sim = t @ s.t()
    else:
        eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
        sim = torch.where(eye, torch.diag((t * s).sum(dim=1)), s @ s.t())
    labels = torch.arange(s.shape[0], device=s.device)
    return F.cross_entropy(sim / temperature, labels)
