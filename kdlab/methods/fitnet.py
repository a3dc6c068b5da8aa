"""FitNet (Romero et al. 2015): regress one student stage map onto the teacher's (hint loss)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import like, probe_maps
from kdlab.methods.modules.conv_reg import ConvReg
from kdlab.methods.registry import register_method


@register_method("fitnet", paper="Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015")
class FitNet(Distiller):
    """Hint loss: CE + weight·MSE(ConvReg(student stage), teacher stage), one stage, one phase.

    As in RepDistiller, mdistiller and CompKD (methods.md §1.11): the hint is the post-ReLU
    ``stages[hint_layer]`` of both networks (default 2, the output of the second stage; SimKD
    uses 1), the regressor is :class:`~kdlab.methods.modules.conv_reg.ConvReg` (conv 3×3 s2 /
    transposed conv 4×4 s2 for a 2× size ratio either way, else a ``(1+ΔH)×(1+ΔW)`` conv, then BN +
    ReLU), the loss is the element-mean MSE, weight 100, CE 1, no KD. The paper's two-stage hint
    pre-training is used by none of the references and is not done here.

    Deviation: where RepDistiller/mdistiller raise (student map smaller than the teacher's by a
    ratio other than 2), the regressor keeps the student's size and the teacher map is
    average-pooled down to it (SimKD's ConvReg), so every pair of the zoo works. The hint index
    counts the stem as 0 in both networks; with 4- and 5-map networks the same index can land at
    different depths (pitfall 23). The regressor is sized from a dummy forward at ``image_size``.
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, hint_layer: int = 2,
                 weight: float = 100.0, ce_weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        s_maps = probe_maps(student, image_size, "stages", "fitnet", "student")
        t_maps = probe_maps(teacher, image_size, "stages", "fitnet", "teacher")
        for role, maps in (("student", s_maps), ("teacher", t_maps)):
            if not -len(maps) <= hint_layer < len(maps):
                raise KdlabError(f"fitnet: hint_layer={hint_layer} is out of range; the {role} has "
                                 f"{len(maps)} stage maps (0 = stem, {len(maps) - 1} = deepest)")
        self.hint_layer = hint_layer
        self.regressor = like(ConvReg(s_maps[hint_layer], t_maps[hint_layer]), student)
        self.weight = weight
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        f_s = self.regressor(s.stages[self.hint_layer])
        f_t = self.regressor.match_target(t.stages[self.hint_layer])
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "hint": self.weight * losses.hint(f_s, f_t),
        }
