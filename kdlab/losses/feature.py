"""Feature-level distillation losses as pure functions (no state; adapters live in the methods).

Each function takes already-adapted feature maps (``B×C×H×W``) of one stage, or lists of them, and
follows the reference reductions (RepDistiller ``distiller_zoo/``, mdistiller ``distillers/``,
clovaai/overhaul-distillation); methods.md §1.11–§1.19 gives the formulas. Where two maps of one
comparison differ in spatial size, the larger is average-pooled to the smaller
(:func:`pool_to_smaller`), as the references do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def pool_to_smaller(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the spatially larger of two maps to the other's size."""
    hs, ws = f_s.shape[-2:]
    ht, wt = f_t.shape[-2:]
    if (hs, ws) == (ht, wt):
        return f_s, f_t
    h, w = min(hs, ht), min(ws, wt)
    if (hs, ws) != (h, w):
        f_s = F.adaptive_avg_pool2d(f_s, (h, w))
    if (ht, wt) != (h, w):
        f_t = F.adaptive_avg_pool2d(f_t, (h, w))
    return f_s, f_t


# ---- FitNet ---------------------------------------------------------------------------------
def hint(f_s: Tensor, f_t: Tensor) -> Tensor:
    """FitNet hint loss: MSE averaged over every element (the regressor is applied before)."""
    return F.mse_loss(f_s, f_t)


# ---- AT -------------------------------------------------------------------------------------
def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """``L2normalize(flatten(mean_c f_c^p))``: one ``B×HW`` spatial attention vector per sample."""
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def at(f_s: Tensor, f_t: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer for one stage: mean squared difference of the attention maps."""
    f_s, f_t = pool_to_smaller(f_s, f_t)
    return (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()


# ---- NST ------------------------------------------------------------------------------------
def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """``(a_i · b_j)²`` for every pair of rows of ``a`` (B×N×D) and ``b`` (B×M×D): B×M×N."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2)


def nst(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Neuron selectivity transfer for one stage: squared MMD with the kernel ``(a·b)²``.

    Each channel's spatial pattern is L2-normalised; ``mean K(t,t)`` (detached) ``+ mean K(s,s)
    − 2 mean K(s,t)`` over all channel pairs and samples (RepDistiller's ``full_loss`` form).
    """
    f_s, f_t = pool_to_smaller(f_s, f_t)
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    return (_poly_kernel(t, t).mean().detach() + _poly_kernel(s, s).mean()
            - 2 * _poly_kernel(s, t).mean())


# ---- FT -------------------------------------------------------------------------------------
def factor_transfer(factor_s: Tensor, factor_t: Tensor, p1: float = 2.0, p2: int = 1,
                    form: str = "attention") -> Tensor:
    """Factor transfer. ``form="attention"`` (RepDistiller, default) compares *attention maps*:

    ``factor(x) = L2normalize(flatten(mean_c x^p1))``; the loss is ``mean |Δ|`` for ``p2=1`` and
    ``mean Δ^p2`` otherwise. ``form="paper"`` is the paper's eq. 3: the whole factor normalised,
    ``mean_b ‖F_s/‖F_s‖₂ − F_t/‖F_t‖₂‖_p2`` (methods.md §1.14); ``p1`` is unused there.
    """
    factor_s, factor_t = pool_to_smaller(factor_s, factor_t)
    if form == "paper":
        diff = F.normalize(factor_s.flatten(1), dim=1) - F.normalize(factor_t.flatten(1), dim=1)
        return diff.norm(p=p2, dim=1).mean()
    diff = attention_map(factor_s, p1) - attention_map(factor_t, p1)
    return diff.abs().mean() if p2 == 1 else diff.pow(p2).mean()


# ---- AB -------------------------------------------------------------------------------------
def ab(source: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """Activation-boundary loss of one stage, **summed** over every element (batch included).

    ``(s+m)²`` where ``s > −m`` and the teacher is off (``t ≤ 0``), ``(s−m)²`` where ``s ≤ m``
    and the teacher is on (``t > 0``). The method divides by the batch size and weights stages.
    """
    off = (source > -margin) & (target <= 0)
    on = (source <= margin) & (target > 0)
    return ((source + margin).pow(2) * off + (source - margin).pow(2) * on).sum()


# ---- FSP ------------------------------------------------------------------------------------
def fsp_matrices(feats: list[Tensor]) -> list[Tensor]:
    """Gram matrices ``G_ij = mean_hw f_l[i] f_{l+1}[j]`` (B×C_l×C_{l+1}) of consecutive maps."""
    out = []
    for bot, top in zip(feats[:-1], feats[1:]):
        bot, top = pool_to_smaller(bot, top)
        out.append(torch.bmm(bot.flatten(2), top.flatten(2).transpose(1, 2)) / bot[0, 0].numel())
    return out


def fsp(feats_s: list[Tensor], feats_t: list[Tensor]) -> list[Tensor]:
    """FSP loss per consecutive pair: ``mean((G_s − G_t)²)``; needs equal channels layer by layer."""
    return [(gs - gt).pow(2).mean() for gs, gt in zip(fsp_matrices(feats_s), fsp_matrices(feats_t))]


# ---- KDSVD ----------------------------------------------------------------------------------
def _finite_grad(g: Tensor) -> Tensor:
    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def _finite(x: Tensor) -> Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def svd_vectors(feat: Tensor, n: int, space: str = "channel") -> tuple[Tensor, Tensor]:
    """Normalised singular values (B×n) and right singular vectors (B×D×n) of a stage map.

    ``space="channel"`` reads the map as a ``HW×C`` matrix per sample (RepDistiller: vectors in
    channel space); ``"width"`` as ``CH×W`` (mdistiller: vectors in width space). Non-finite
    entries become 0 as in the references; non-finite gradients through the SVD also become 0
    (the references leave them, so a degenerate spectrum can poison a step).
    """
    b, c, h, w = feat.shape
    x = feat if feat.dtype == torch.float64 else feat.float()  # no SVD in half precision; keep float64
    if space == "channel":
        x = x.reshape(b, c, h * w).transpose(1, 2)
    elif space == "width":
        x = x.reshape(b, c * h, w)
    else:
        raise ValueError(f"space must be 'channel' or 'width', got {space!r}")
    if x.requires_grad:
        x.register_hook(_finite_grad)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = _finite(s), _finite(vh.transpose(-2, -1))
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def align_singular_vectors(v_s: Tensor, v_t: Tensor) -> Tensor:
    """For each teacher vector, the student vector of largest ``|cos|``, signed by that cosine."""
    cosine = torch.bmm(v_s.transpose(1, 2), v_t)  # B × k_s × k_t
    best = cosine.abs().amax(dim=1, keepdim=True)
    mask = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return torch.bmm(v_s, mask)


def kdsvd(feats_s: list[Tensor], feats_t: list[Tensor], k: int = 1, space: str = "channel") -> list[Tensor]:
    """KDSVD: RBF relations between the (aligned) singular vectors of consecutive stages.

    The teacher keeps ``k`` vectors, the student ``k + 3``; both sets are scaled by the teacher's
    normalised singular values; per consecutive pair, ``Σ (RBF_s − RBF_t)² / B`` with
    ``RBF = exp(−(v_i[a] − v_{i−1}[b])² / 8)`` and non-finite terms set to 0. One value per pair.
    """
    losses: list[Tensor] = []
    prev_s = prev_t = None
    for f_s, f_t in zip(feats_s, feats_t):
        s_t, v_t = svd_vectors(f_t, k, space)
        _, v_s = svd_vectors(f_s, k + 3, space)
        v_s = align_singular_vectors(v_s, v_t)
        v_t = v_t * s_t.unsqueeze(1)
        v_s = v_s * s_t.unsqueeze(1)
        if prev_s is not None:
            rbf_s = torch.exp(-(v_s.unsqueeze(2) - prev_s.unsqueeze(1)).pow(2) / 8)
            rbf_t = torch.exp(-(v_t.unsqueeze(2) - prev_t.unsqueeze(1)).pow(2) / 8)
            losses.append(_finite((rbf_s - rbf_t.detach()).pow(2)).sum() / f_s.shape[0])
        prev_s, prev_t = v_s, v_t
    return losses


# ---- VID ------------------------------------------------------------------------------------
def vid(pred_mean: Tensor, target: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """Gaussian NLL ``mean ½[(μ − t)²/σ² + log σ²]`` with ``σ²_c = softplus(log_scale_c) + eps``."""
    var = (F.softplus(log_scale) + eps).view(1, -1, 1, 1).to(pred_mean.dtype)
    return (0.5 * ((pred_mean - target).pow(2) / var + var.log())).mean()


def vid_log_scale_init(init_pred_var: float = 5.0, eps: float = 1e-5) -> float:
    """The ``log_scale`` value at which ``softplus(log_scale) + eps == init_pred_var``."""
    return math.log(math.expm1(init_pred_var - eps))


# ---- OFD ------------------------------------------------------------------------------------
def ofd_margin(std: Tensor, mean: Tensor) -> Tensor:
    """Per-channel OFD margin: ``E[x | x < 0]`` for ``x ~ N(mean, std²)``, or ``−3·std`` if rare.

    ``margin = m − s·φ(m/s)/Φ(−m/s)`` where ``Φ(−m/s) > 0.001``, else ``−3s`` (``s = |std|``),
    computed in float64 (the references use scipy).
    """
    s = std.detach().double().abs().clamp_min(1e-12)
    m = mean.detach().double()
    z = m / s
    cdf = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    expected = m - s * pdf / cdf.clamp_min(1e-300)
    return torch.where(cdf > 1e-3, expected, -3 * s).to(std.dtype if std.is_floating_point() else torch.float32)


def ofd(source: Tensor, target: Tensor, margin: Tensor) -> Tensor:
    """OFD partial L2 for one stage, summed over C, H, W and averaged over the batch.

    With ``t' = max(t, margin)`` (margin broadcast per channel), ``(s − t')²`` is kept where
    ``s > t'`` or ``t' > 0``: no penalty where both are below the margin.
    """
    margin = margin.to(source).view(1, -1, 1, 1)
    t = torch.maximum(target, margin)
    keep = (source > t) | (t > 0)
    return ((source - t).pow(2) * keep).sum() / source.shape[0]
