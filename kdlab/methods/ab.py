"""AB (Heo et al. 2019): pre-train the student on the teacher's activation boundaries, then CE."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import like, pair_stages, probe_maps
from kdlab.methods.modules.conv_reg import ConvReg
from kdlab.methods.modules.feature_modules import FeatureInitMixin, check_init_modules
from kdlab.methods.registry import register_method


@register_method("ab", paper="Heo et al., Knowledge Transfer via Distillation of Activation Boundaries Formed "
                             "by Hidden Neurons, AAAI 2019")
class AB(FeatureInitMixin, Distiller):
    """Activation boundaries: an init phase on the AB loss (connectors + student features), then CE only.

    RepDistiller ``distiller_zoo/AB.py``, ``models/util.py`` (Connector), ``helper/pretrain.py``
    (methods.md §1.15, pitfall 11):

    * pre-ReLU ``preact[1:]`` of both networks; per stage a connector on the student side:
      identity where channels and size match, else :class:`ConvReg` without ReLU (conv + BN);
    * loss per stage :func:`kdlab.losses.ab` with margin 1, divided by the batch size, times
      3/1000, stage weight ``2^(i−L+1)`` (deepest 1, then 1/2, 1/4, …);
    * **init phase** (``init_epochs`` = 30, at the run's lr unless ``init_lr``, the run's SGD
      momentum and weight decay): trains the connectors and the student's feature modules on the
      AB loss only. ``init_modules="features"`` (default, as RepDistiller: ``model_s.eval()`` then
      ``init_modules.train()`` over the connector and ``get_feat_modules()``) trains the modules
      up to the last stage in train mode; the rest of the student stays in eval mode and is not
      optimised, so a WRN's final BN (whose output is the deepest pre-activation tap) normalises
      with its initial running statistics and keeps its weights
      (:mod:`kdlab.methods.modules.feature_modules`). ``init_modules="all_but_classifier"`` is
      kdlab's earlier behaviour: every student parameter but the classifier's, whole student in
      train mode (batch statistics in that final BN);
    * **main phase**: ``ce_weight``·CE only (RepDistiller passes ``-b 1`` but sets the
      distillation loss to 0 for AB); the connectors are then unused and not optimised, and the
      teacher is not run.

    Deviations: RepDistiller asserts equal stage counts; here stages are paired from the shallow
    end (``zip``) and the extra deep ones dropped. Where a student map is smaller than the
    teacher's by a ratio other than 2, the ConvReg pools the teacher map to the student's size
    (see :mod:`kdlab.methods.modules.conv_reg`). Connectors are sized from a dummy
    forward at ``image_size``. On a WRN (pre-activation), "pre-ReLU" is the output of the next
    block's BN, as in mdistiller (pitfall 15).
    """

    needs = Needs.of(student={"logits", "preact"}, teacher={"preact"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, init_epochs: int = 30,
                 init_lr: float | None = None, margin: float = 1.0, weight: float = 3e-3,
                 ce_weight: float = 1.0, init_modules: str = "features", image_size: int = 32) -> None:
        check_init_modules("ab", init_modules)
        super().__init__(student, teacher)
        s_maps = probe_maps(student, image_size, "preact", "ab", "student")[1:]
        t_maps = probe_maps(teacher, image_size, "preact", "ab", "teacher")[1:]
        self.pairs = pair_stages(len(s_maps), len(t_maps), "start")
        self.connectors = like(nn.ModuleList(
            [nn.Identity() if s_maps[i] == t_maps[j] else ConvReg(s_maps[i], t_maps[j], use_relu=False)
             for i, j in self.pairs]), student)
        n = len(self.pairs)
        self.stage_weights = [2.0 ** (k - n + 1) for k in range(n)]
        self.init_epochs = init_epochs
        self.init_lr = init_lr
        self.margin = margin
        self.weight = weight
        self.ce_weight = ce_weight
        self.init_modules = init_modules
        self.image_size = image_size

    def ab_loss(self, s: Features, t: Features) -> Tensor:
        fs, ft = s.preact[1:], t.preact[1:]
        total = 0.0
        for k, (i, j) in enumerate(self.pairs):
            conn = self.connectors[k]
            f_t = conn.match_target(ft[j]) if isinstance(conn, ConvReg) else ft[j]
            total = total + self.stage_weights[k] * losses.ab(conn(fs[i]), f_t, self.margin)
        return self.weight * total / fs[0].shape[0]

    def init_losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {"ab": self.ab_loss(s, t)}

    def init_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.connectors.parameters()
        yield from self.init_student_parameters()

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The main phase optimises the student only (the connectors served the init phase)."""
        conn = {id(p) for p in self.connectors.parameters()}
        return (p for p in super().trainable_parameters() if id(p) not in conn)

    def teacher_features(self, batch: Batch) -> Features | None:
        return super().teacher_features(batch) if self.phase == "init" else None

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target)}
