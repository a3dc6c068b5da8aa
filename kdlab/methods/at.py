"""AT (Zagoruyko & Komodakis 2017): match the spatial attention maps of every stage."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import pair_stages, probe_maps
from kdlab.methods.registry import register_method


@register_method("at", paper="Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017")
class AT(Distiller):
    """Attention transfer: CE + weight·Σ_stages mean((a(f_s) − a(f_t))²), a = normalised mean_c f^p.

    RepDistiller ``distiller_zoo/AT.py`` / mdistiller ``AT`` (methods.md §1.12): post-ReLU stage
    outputs ``stages[1:]`` (stem excluded), the larger map average-pooled to the smaller, p=2,
    weight 1000, CE 1, no KD (SimKD adds KD on top). No trainable modules; channels may differ.
    Where the networks have different numbers of stages, stages are paired from the shallow end
    and the deeper extra ones dropped (the references' ``zip``). ``image_size`` only sizes that
    pairing check (dummy forward).
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, p: float = 2.0,
                 weight: float = 1000.0, ce_weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        s_maps = probe_maps(student, image_size, "stages", "at", "student")[1:]
        t_maps = probe_maps(teacher, image_size, "stages", "at", "teacher")[1:]
        self.pairs = pair_stages(len(s_maps), len(t_maps), "start")
        self.p = p
        self.weight = weight
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        fs, ft = s.stages[1:], t.stages[1:]
        at = sum(losses.at(fs[i], ft[j], self.p) for i, j in self.pairs)
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target), "at": self.weight * at}
