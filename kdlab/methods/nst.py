"""NST (Huang & Wang 2017): match the distributions of channel activation patterns (MMD)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import pair_stages, probe_maps
from kdlab.methods.registry import register_method


@register_method("nst", paper="Huang & Wang, Like What You Like: Knowledge Distill via Neuron Selectivity "
                              "Transfer, arXiv 1707.01219, 2017")
class NST(Distiller):
    """Neuron selectivity transfer: CE + weight·Σ_stages MMD² with the polynomial kernel (a·b)².

    RepDistiller ``distiller_zoo/NST.py`` (mdistiller's is equivalent; methods.md §1.13): each
    channel's spatial map is L2-normalised, ``K(t,t)`` (detached) ``+ K(s,s) − 2K(s,t)`` averaged
    over channel pairs, summed over the post-ReLU ``stages[1:]``, larger map pooled to the smaller,
    weight 50, CE 1, no KD. No trainable modules. Stage pairing as AT (shallow end, ``zip``).
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, weight: float = 50.0,
                 ce_weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        s_maps = probe_maps(student, image_size, "stages", "nst", "student")[1:]
        t_maps = probe_maps(teacher, image_size, "stages", "nst", "teacher")[1:]
        self.pairs = pair_stages(len(s_maps), len(t_maps), "start")
        self.weight = weight
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        fs, ft = s.stages[1:], t.stages[1:]
        nst = sum(losses.nst(fs[i], ft[j]) for i, j in self.pairs)
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target), "nst": self.weight * nst}
