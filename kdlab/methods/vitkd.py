"""ViTKD (Yang et al., 2022): mimic a ViT teacher's shallow tokens and generate its deep tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.projectors import Generator, to_device_of
from kdlab.methods.modules.vit_tokens import TokenHooks, random_token_mask, token_layout
from kdlab.methods.registry import register_method


@register_method("vitkd", paper="Yang, Li, Zeng, Li, Yuan, Li, ViTKD: Practical Guidelines for ViT feature "
                                "knowledge distillation, arXiv 2209.02432")
class ViTKD(Distiller):
    """ViTKD (ViT pairs only): CE + mimicking of layers 0–1 patch tokens + masked generation of the last layer's.

    Follows yzd-v/cls_KD ``mmcls/models/dis_losses/vitkd.py`` (methods.md §1.22):

    * Features: the patch tokens (class/prefix tokens dropped) of blocks 0 and 1, stacked B×2×N×D,
      and of the final ``norm`` output, B×N×D (see :mod:`kdlab.methods.modules.vit_tokens`).
    * When D_s ≠ D_t: one ``Linear(D_s→D_t)`` per shallow layer and one for the deep layer.
    * Mimicking: ``alpha_vitkd · Σ(align(low_s) − low_t)² / B``, α = 3e-5.
    * Generation: per sample, a random ``lambda_vitkd`` (0.5) of the aligned deep tokens is replaced
      by a learned mask token (MAE-style shuffle/unshuffle, torch's global RNG), the tokens are laid
      on the patch grid and passed through conv3×3-ReLU-conv3×3;
      ``beta_vitkd · Σ_masked(gen − high_t)² / B / λ``, β = 3e-6.
    * Total = ``ce_weight``·CE (1) + ViTKD. The reference's best configs add NKD (γ=1); combine
      with an ``nkd`` run if wanted — not included here.

    Both networks must be timm-style ViTs (the zoo's ``vit_*`` or ``timm:deit_*``) with the same
    patch grid; a CNN on either side raises one KdlabError at construction.
    """

    needs = Needs.of(student={"logits"}, teacher={"logits", "pooled"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, alpha_vitkd: float = 3e-5,
                 beta_vitkd: float = 3e-6, lambda_vitkd: float = 0.5, ce_weight: float = 1.0) -> None:
        if teacher is None:
            raise KdlabError("method 'vitkd' needs a teacher; set teacher.name (and teacher.checkpoint)")
        ls = token_layout(student, "vitkd", "student")
        lt = token_layout(teacher, "vitkd", "teacher")
        if ls.grid != lt.grid:
            raise KdlabError(f"vitkd: student and teacher patch grids differ ({ls.grid} vs {lt.grid}); use ViTs with "
                             "the same image and patch size")
        super().__init__(student, teacher)
        self._tok_s = TokenHooks(student, ls)
        self._tok_t = TokenHooks(teacher, lt)
        self.grid = ls.grid
        d_s, d_t = ls.dim, lt.dim
        if d_s != d_t:
            self.align_low = to_device_of(nn.ModuleList(nn.Linear(d_s, d_t) for _ in range(2)), student)
            self.align_high = to_device_of(nn.Linear(d_s, d_t), student)
        else:
            self.align_low = None
            self.align_high = None
        p = next(student.parameters())
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d_t, device=p.device, dtype=p.dtype))
        self.generation = to_device_of(Generator(d_t), student)
        self.alpha_vitkd, self.beta_vitkd, self.lambda_vitkd = alpha_vitkd, beta_vitkd, lambda_vitkd
        self.ce_weight = ce_weight

    def generate(self, high_s: Tensor) -> tuple[Tensor, Tensor]:
        """(generated B×N×D_t tokens, B×N mask with 1 = masked) for the student's deep tokens."""
        x = self.align_high(high_s) if self.align_high is not None else high_s
        b, n, d = x.shape
        ids_shuffle, ids_restore, keep = random_token_mask(b, n, self.lambda_vitkd, x.device)
        kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        x = torch.cat([kept, self.mask_token.expand(b, n - keep, d)], dim=1)
        x = torch.gather(x, 1, ids_restore[:, :, None].expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        h, w = self.grid
        x = x.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return self.generation(x).flatten(2).transpose(1, 2), mask

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        low_s, high_s = self._tok_s.pop()
        low_t, high_t = self._tok_t.pop()
        if self.align_low is not None:
            low_s = torch.stack([self.align_low[i](low_s[:, i]) for i in range(2)], dim=1)
        generated, mask = self.generate(high_s)
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "vitkd_mimic": self.alpha_vitkd * losses.vitkd_mimic(low_s, low_t),
            "vitkd_gen": self.beta_vitkd * losses.vitkd_generation(generated, high_t, mask, self.lambda_vitkd),
        }
