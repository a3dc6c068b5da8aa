"""FSP (Yim et al. 2017): pre-train the student to match the teacher's flow (Gram) matrices, then CE."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import pair_stages, probe_maps
from kdlab.methods.modules.feature_modules import FeatureInitMixin, check_init_modules
from kdlab.methods.registry import register_method


@register_method("fsp", paper="Yim et al., A Gift from Knowledge Distillation: Fast Optimization, Network "
                              "Minimization and Transfer Learning, CVPR 2017")
class FSP(FeatureInitMixin, Distiller):
    """Flow of solution procedure: an init phase on the FSP loss (student features), then CE only.

    RepDistiller ``distiller_zoo/FSP.py`` and ``helper/pretrain.py`` (methods.md §1.16, pitfall 11):
    FSP matrices ``G = mean_hw f_l f_{l+1}ᵀ`` between consecutive post-ReLU maps of ``stages``
    (stem included: RepDistiller's ``feat[:-1]``), the deeper of each consecutive pair pooled to
    the shallower's size; ``Σ_pairs mean((G_s − G_t)²)`` (:func:`kdlab.losses.fsp`).

    * **init phase** (``init_epochs`` = 30, at the run's lr unless ``init_lr``, the run's SGD
      momentum and weight decay): the student's feature modules on ``weight``·FSP (weight 1, as
      the reference sums the terms unweighted). ``init_modules="features"`` (default, as
      RepDistiller's ``model_s.eval()`` then ``get_feat_modules().train()``): the layers up to the
      last stage train in train mode, the rest of the student (a WRN's final BN, MobileNetV2's
      last 1x1 conv, ShuffleNetV2's conv2/bn2, the classifier) stays in eval mode, so its running
      statistics do not move (:mod:`kdlab.methods.modules.feature_modules`);
      ``init_modules="all_but_classifier"``: kdlab's earlier behaviour, every student parameter
      but the classifier's, whole student in train mode;
    * **main phase**: ``ce_weight``·CE only (RepDistiller sets β=50 but the distillation loss to 0);
      the teacher is not run.

    Needs **equal channel counts** layer by layer; any other pair fails at construction naming the
    layers (the reference raises too; that is why several pairs are N/A in its tables). Where the
    stage counts differ, maps are paired from the shallow end (the reference asserts equal counts).
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, init_epochs: int = 30,
                 init_lr: float | None = None, weight: float = 1.0, ce_weight: float = 1.0,
                 init_modules: str = "features", image_size: int = 32) -> None:
        check_init_modules("fsp", init_modules)
        super().__init__(student, teacher)
        s_maps = probe_maps(student, image_size, "stages", "fsp", "student")
        t_maps = probe_maps(teacher, image_size, "stages", "fsp", "teacher")
        self.pairs = pair_stages(len(s_maps), len(t_maps), "start")
        bad = [f"stages[{i}] {s_maps[i][0]} vs {t_maps[j][0]}" for i, j in self.pairs if s_maps[i][0] != t_maps[j][0]]
        if bad:
            raise KdlabError(f"fsp: needs equal channel counts in student and teacher at every layer, but "
                             f"{type(student).__name__} and {type(teacher).__name__} differ at "
                             f"{'; '.join(bad)} (student vs teacher); use a pair of equal widths or another method")
        if len(self.pairs) < 2:
            raise KdlabError("fsp: needs at least two stage maps in both networks")
        self.init_epochs = init_epochs
        self.init_lr = init_lr
        self.weight = weight
        self.ce_weight = ce_weight
        self.init_modules = init_modules
        self.image_size = image_size

    def fsp_loss(self, s: Features, t: Features) -> Tensor:
        fs = [s.stages[i] for i, _ in self.pairs]
        ft = [t.stages[j] for _, j in self.pairs]
        return self.weight * sum(losses.fsp(fs, ft))

    def init_losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {"fsp": self.fsp_loss(s, t)}

    def init_parameters(self) -> Iterator[nn.Parameter]:
        return self.init_student_parameters()

    def teacher_features(self, batch: Batch) -> Features | None:
        return super().teacher_features(batch) if self.phase == "init" else None

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target)}
