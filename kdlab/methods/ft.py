"""FT (Kim et al. 2018): pre-train a teacher paraphraser, then match its factors with a student translator."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import like, probe_maps
from kdlab.methods.modules.factor import Paraphraser, Translator
from kdlab.methods.registry import register_method


@register_method("ft", paper="Kim, Park & Kwak, Paraphrasing Complex Network: Network Compression via Factor "
                             "Transfer, NeurIPS 2018")
class FT(Distiller):
    """Factor transfer: init phase trains a paraphraser on the teacher; then CE + weight·L1 of factor maps.

    RepDistiller ``models/util.py`` (Paraphraser, Translator), ``distiller_zoo/FT.py``,
    ``helper/pretrain.py`` (methods.md §1.14, pitfall 11), on the last stage map ``stages[-1]``:

    * **init phase** (``init_epochs`` = 30, ``init_lr`` 0.01): the paraphraser (conv auto-encoder,
      ``C→C→kC→kC``, LeakyReLU 0.1, no BN, k=0.5) learns to reconstruct the teacher map (MSE);
      only the paraphraser trains. RepDistiller uses lr 0.01 for resnet/wrn students and the run's
      lr otherwise (0.05 for vgg, 0.01 for MobileNet/ShuffleNet): set ``init_lr`` for a vgg student.
    * **main phase**: the paraphraser is frozen (no gradient; not optimised); the translator
      (``C_s→C_s→kC_t→kC_t``, BN, LeakyReLU) trains with the student on
      ``weight``·:func:`kdlab.losses.factor_transfer` (p1=2, p2=1: L1 between **attention maps** of
      the factors, as implemented; ``factor="paper"`` switches to the paper's L1 distance of the
      whole L2-normalised factors), larger map pooled to the smaller; weight 200, CE 1, no KD.

    In the init phase the student runs in eval mode (RepDistiller's ``model_s.eval()``), so its BN
    statistics do not drift while it is not trained. Paraphraser and translator count in
    :meth:`extra_parameters` (both are trained, in turn).
    Modules are sized from a dummy forward at ``image_size``.
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, init_epochs: int = 30,
                 init_lr: float | None = 0.01, rate: float = 0.5, weight: float = 200.0, p1: float = 2.0,
                 p2: int = 1, factor: str = "attention", ce_weight: float = 1.0, image_size: int = 32) -> None:
        if factor not in ("attention", "paper"):
            raise KdlabError(f"ft: factor must be 'attention' (RepDistiller) or 'paper', got {factor!r}")
        super().__init__(student, teacher)
        c_s = probe_maps(student, image_size, "stages", "ft", "student")[-1][0]
        c_t = probe_maps(teacher, image_size, "stages", "ft", "teacher")[-1][0]
        self.paraphraser = like(Paraphraser(c_t, rate), teacher)
        self.translator = like(Translator(c_s, c_t, rate), student)
        self.init_epochs = init_epochs
        self.init_lr = init_lr
        self.weight = weight
        self.p1, self.p2, self.factor = p1, p2, factor
        self.ce_weight = ce_weight

    def train(self, mode: bool = True) -> FT:
        """As RepDistiller's pretrain (``model_s.eval()``): the student's BN statistics stay put in the init phase."""
        super().train(mode)
        if mode and self.phase == "init":
            self.student.eval()
        return self

    def init_losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        f_t = t.stages[-1]
        _, rec = self.paraphraser(f_t)
        return {"paraphraser": F.mse_loss(rec, f_t)}

    def init_parameters(self) -> Iterator[nn.Parameter]:
        return self.paraphraser.parameters()

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The main phase optimises the student and the translator; the paraphraser stays frozen."""
        frozen = {id(p) for p in self.paraphraser.parameters()}
        return (p for p in super().trainable_parameters() if id(p) not in frozen)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        factor_s = self.translator(s.stages[-1])
        with torch.no_grad():
            factor_t = self.paraphraser.encode(t.stages[-1])
        ft = losses.factor_transfer(factor_s, factor_t, self.p1, self.p2, form=self.factor)
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target), "ft": self.weight * ft}
