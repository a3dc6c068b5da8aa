"""Feature-level losses of ReviewKD, MGD, SemCKD, SRRL and ViTKD as pure functions.

Every function takes already-projected tensors (the methods own the connectors) and uses the
reference reductions, written out per function. Nothing here draws random numbers: the masks of
MGD and ViTKD are arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

HCL_LEVELS = (4, 2, 1)


def hcl(feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
    """ReviewKD's hierarchical context loss, summed over levels.

    Per level (B×C×H×W, equal shapes): ``MSE(fs, ft)`` plus, for each pooled size ``l`` in
    (4, 2, 1) with ``l < H``, ``w·MSE(avgpool_l(fs), avgpool_l(ft))`` where ``w`` halves for each
    included size (1/2, 1/4, 1/8); the sum is divided by ``1 + Σw``. A 1×1 level (the pooled
    vector) is a plain MSE.
    """
    total = feats_s[0].new_zeros(())
    for fs, ft in zip(feats_s, feats_t, strict=True):
        fs, ft = fs.float(), ft.float()
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft)
        weight, norm = 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            norm += weight
        total = total + loss / norm
    return total


def mgd(generated: Tensor, target: Tensor) -> Tensor:
    """MGD's generation loss: squared error summed over C, H, W and averaged over the batch."""
    return (generated.float() - target.float()).pow(2).sum() / generated.shape[0]


def semckd(values: Sequence[Sequence[Tensor]], targets: Sequence[Sequence[Tensor]], attention: Tensor) -> Tensor:
    """SemCKD: ``Σ_{b,i,j} α[b,i,j] · mean_{c,h,w}(v_ij[b] − t_ij[b])² / (B · N_student_layers)``.

    ``values[i][j]`` is student layer ``i`` projected for teacher layer ``j`` and ``targets[i][j]``
    the matching (possibly pooled) teacher map; ``attention`` is B×N_s×N_t (rows sum to 1).
    """
    b, n_s, n_t = attention.shape
    per = torch.stack([torch.stack([(values[i][j].float() - targets[i][j].float()).pow(2).reshape(b, -1).mean(1)
                                    for j in range(n_t)], dim=1) for i in range(n_s)], dim=1)
    return (attention.float() * per).sum() / (b * n_s)


def srrl(feat_s: Tensor, feat_t: Tensor, logits_st: Tensor, logits_t: Tensor, *, fm_weight: float = 1.0,
         sr_weight: float = 1.0) -> Tensor:
    """SRRL: ``fm_weight·MSE(feat_s, feat_t) + sr_weight·MSE(logits_st, logits_t)`` (element means).

    ``feat_s`` is the connected student vector, ``logits_st`` the teacher classifier applied to it.
    """
    return (fm_weight * F.mse_loss(feat_s.float(), feat_t.float())
            + sr_weight * F.mse_loss(logits_st.float(), logits_t.float()))


def vitkd_mimic(low_s: Tensor, low_t: Tensor) -> Tensor:
    """ViTKD mimicking: squared error of the (aligned) shallow tokens, summed, over the batch size."""
    return (low_s.float() - low_t.float()).pow(2).sum() / low_s.shape[0]


def vitkd_generation(generated: Tensor, target: Tensor, mask: Tensor, mask_ratio: float) -> Tensor:
    """ViTKD generation: squared error on the masked tokens (``mask`` B×N, 1 = masked), summed,
    divided by the batch size and by the mask ratio λ."""
    m = mask.float().unsqueeze(-1)
    return ((generated.float() - target.float()) * m).pow(2).sum() / generated.shape[0] / mask_ratio
