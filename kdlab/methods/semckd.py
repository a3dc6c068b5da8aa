"""SemCKD (Chen et al., AAAI 2021): cross-layer distillation with per-sample semantic calibration."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.projectors import MLPEmbed, SemCKDProj, probe, require_maps, to_device_of
from kdlab.methods.registry import register_method


def _size(a: Tensor, b: Tensor) -> tuple[int, int]:
    return (min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3]))


@register_method("semckd", paper="Chen, Mei, Zhang, Wang, Wang, Feng, Chen, Cross-Layer Distillation with "
                                 "Semantic Calibration, AAAI 2021")
class SemCKD(Distiller):
    """SemCKD: every student stage regressed onto every teacher stage, weighted by learned attention.

    Follows DefangChen/SimKD (``models/util.py`` SelfA/MLPEmbed/Proj, ``distiller_zoo/SemCKD.py``;
    methods.md §1.23). Student layers ``stages[1:]`` and teacher layers ``stages[1:]`` (SimKD's
    ``feat[1:-1]``, post-ReLU). Per layer, the batch similarity ``A = F Fᵀ`` (B×B) of the flattened
    map goes through an ``MLPEmbed(B → B/4)`` (query for student layers, key for teacher layers);
    ``α[b,i,j] = softmax_j⟨q_bi, k_bj⟩``. ``Proj_ij`` (conv1×1 → 2C_t, BN, ReLU, conv3×3, BN, ReLU,
    conv1×1 → C_t) maps student layer ``i`` to teacher layer ``j``; the larger map is first
    average-pooled to the smaller one (SimKD pools the student when it is larger, else the
    teacher). Loss ``Σ α·MSE_b / (B·N_s)`` (:func:`kdlab.losses.semckd`), weighted by ``beta`` = 400
    on top of ``ce_weight``·CE (1) + ``kd_weight``·KD (1, T=4), SimKD's settings.

    The MLPs' input width **is the batch size** (pitfall 12): ``batch_size`` is a data fact,
    filled from ``data.batch_size`` unless set (64 when built by hand). The method sets
    ``drop_last`` so the loader drops the final incomplete batch; any other batch size raises at
    forward time. Non-square maps are pooled per side (the reference assumes squares).
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"logits", "stages"})
    hinton_kd_param = "kd_weight"
    drop_last = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, beta: float = 400.0,
                 ce_weight: float = 1.0, kd_weight: float = 1.0, temperature: float = 4.0,
                 batch_size: int = 64, embed_factor: int = 4, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if teacher is None:
            raise KdlabError("method 'semckd' needs a teacher")
        if batch_size < embed_factor:
            raise KdlabError(f"semckd: batch_size={batch_size} is smaller than embed_factor={embed_factor}")
        s_maps = probe(student, image_size, "semckd", "student")["stages"][1:]
        t_maps = probe(teacher, image_size, "semckd", "teacher")["stages"][1:]
        require_maps(s_maps, "semckd", "student", student)
        require_maps(t_maps, "semckd", "teacher", teacher)
        dim = batch_size // embed_factor
        self.query = nn.ModuleList(MLPEmbed(batch_size, dim) for _ in s_maps)
        self.key = nn.ModuleList(MLPEmbed(batch_size, dim) for _ in t_maps)
        self.proj = nn.ModuleList(nn.ModuleList(SemCKDProj(cs[0], ct[0]) for ct in t_maps) for cs in s_maps)
        for m in (self.query, self.key, self.proj):
            to_device_of(m, student)
        self.batch_size = batch_size
        self.beta, self.ce_weight, self.kd_weight, self.temperature = beta, ce_weight, kd_weight, temperature

    def attention(self, feats_s: list[Tensor], feats_t: list[Tensor]) -> Tensor:
        """α (B×N_s×N_t): per-sample softmax over teacher layers of query·key."""
        def sim(f: Tensor) -> Tensor:
            f = f.reshape(f.shape[0], -1)
            return f @ f.t()
        q = torch.stack([emb(sim(f)) for emb, f in zip(self.query, feats_s, strict=True)], dim=1)  # B×N_s×d
        k = torch.stack([emb(sim(f)) for emb, f in zip(self.key, feats_t, strict=True)], dim=2)  # B×d×N_t
        return F.softmax(torch.bmm(q, k), dim=-1)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        b = s.logits.shape[0]
        if b != self.batch_size:
            raise KdlabError(f"semckd: got a batch of {b} but its query/key MLPs take batch_size={self.batch_size} "
                             "inputs; set method.params.batch_size to data.batch_size (the last incomplete batch "
                             "is dropped by the loader)")
        feats_s, feats_t = s.stages[1:], t.stages[1:]
        values: list[list[Tensor]] = []
        targets: list[list[Tensor]] = []
        for i, fs in enumerate(feats_s):
            values.append([])
            targets.append([])
            for j, ft in enumerate(feats_t):
                size = _size(fs, ft)
                src = fs if tuple(fs.shape[2:]) == size else F.adaptive_avg_pool2d(fs, size)
                tgt = ft if tuple(ft.shape[2:]) == size else F.adaptive_avg_pool2d(ft, size)
                values[i].append(self.proj[i][j](src))
                targets[i].append(tgt)
        terms = {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target)}
        if self.kd_weight:
            terms["kd"] = self.kd_weight * losses.kd(s.logits, t.logits, self.temperature)
        terms["semckd"] = self.beta * losses.semckd(values, targets, self.attention(feats_s, feats_t))
        return terms
