"""VID (Ahn et al. 2019): maximise a variational bound on teacher–student mutual information."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.losses.feature import pool_to_smaller, vid_log_scale_init
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import VIDRegressor, like, pair_stages, probe_maps
from kdlab.methods.registry import register_method


@register_method("vid", paper="Ahn et al., Variational Information Distillation for Knowledge Transfer, CVPR 2019")
class VID(Distiller):
    """Variational information distillation: CE + weight·Σ_stages Gaussian NLL of teacher given student.

    RepDistiller ``distiller_zoo/VID.py`` (SimKD and CompKD carry the same file; methods.md §1.18):
    per pair of post-ReLU ``stages[1:]`` a regressor ``μ`` (1×1 convs ``C_s→C_t→C_t→C_t``, ReLUs
    between, no bias; mid width = teacher channels) and a per-channel variance
    ``σ²_c = softplus(α_c) + eps`` with ``α`` initialised so that ``σ² = init_pred_var`` (5,
    eps 1e-5). The larger map is pooled to the smaller **before** the regressor; the loss is
    ``mean ½[(μ(f_s) − f_t)²/σ² + log σ²]`` summed over stages; weight 1, CE 1, no KD.

    Reference bug fixed: mdistiller keeps the log-scales in a plain Python list, so they are never
    optimised, never saved, and σ² stays 5. Here they are registered parameters (``log_scales``),
    trained with the student, saved in checkpoints and counted by :meth:`extra_parameters`, as in
    RepDistiller where the VIDLoss modules are in the trainable list. Stage pairing: shallow end
    (``zip``). Regressors are sized from a dummy forward at ``image_size``.
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, weight: float = 1.0,
                 init_pred_var: float = 5.0, eps: float = 1e-5, ce_weight: float = 1.0,
                 image_size: int = 32) -> None:
        super().__init__(student, teacher)
        s_maps = probe_maps(student, image_size, "stages", "vid", "student")[1:]
        t_maps = probe_maps(teacher, image_size, "stages", "vid", "teacher")[1:]
        self.pairs = pair_stages(len(s_maps), len(t_maps), "start")
        init = vid_log_scale_init(init_pred_var, eps)
        self.regressors = like(nn.ModuleList(
            [VIDRegressor(s_maps[i][0], t_maps[j][0]) for i, j in self.pairs]), student)
        self.log_scales = like(nn.ParameterList(
            [nn.Parameter(torch.full((t_maps[j][0],), init)) for _, j in self.pairs]), student)
        self.weight = weight
        self.eps = eps
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        fs, ft = s.stages[1:], t.stages[1:]
        nll = 0.0
        for k, (i, j) in enumerate(self.pairs):
            f_s, f_t = pool_to_smaller(fs[i], ft[j])
            nll = nll + losses.vid(self.regressors[k](f_s), f_t, self.log_scales[k], self.eps)
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target), "vid": self.weight * nll}
