"""CRD (Tian et al. 2020): contrastive distillation of pooled embeddings against memory banks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.data.contrast import MODES
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.embed import Embed, logits_width, pooled_width
from kdlab.methods.modules.memory import ContrastMemory
from kdlab.methods.registry import register_method


@register_method("crd", paper="Tian, Krishnan, Isola, Contrastive Representation Distillation, ICLR 2020")
class CRD(Distiller):
    """Contrastive representation distillation: CE + weight·NCE(student↔teacher memories) [+ KD].

    Follows HobbitLong/RepDistiller ``crd/`` (methods.md §1.30):

    * ``Embed_s``/``Embed_t``: Linear(pooled width → ``feat_dim`` 128) + L2-norm, both trainable.
    * :class:`~kdlab.methods.modules.memory.ContrastMemory`: two ``num_data``×128 buffers (saved in
      checkpoints); ``num_data`` is the training-set size, filled in from the dataset.
    * Scores ``exp(⟨memory, v⟩/τ)/Z`` with τ = ``nce_t`` 0.07; Z set once from the first batch and
      kept in a buffer. Loss: paper eq. 18 (:func:`kdlab.losses.crd_nce`) for both anchors, summed.
    * The memories are updated at ``batch.index`` after scoring, momentum ``nce_m`` 0.5.
    * The data layer supplies ``batch.extra["contrast_index"]`` (the positive, then ``nce_k`` = 16384
      negatives of other classes; ``mode`` "exact" or "relax"): the method sets
      ``contrast_negatives``/``contrast_mode`` and the training loader draws them.

    Weights: CE 1 + 0.8·CRD (RepDistiller "CRD"); ``kd_weight=1`` at T=4 gives "CRD+KD". SimKD's
    table uses CE 1 + KD 1 + 0.8·CRD. ``feature="logits"`` embeds the logits instead of the pooled
    features, as Comparative KD (alextxu/ckd) runs CRD in its few-sample setting (methods.md §1.30).
    """

    needs = Needs.of(student={"logits", "pooled"}, teacher={"logits", "pooled"})
    hinton_kd_param = "kd_weight"
    needs_index = True

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, weight: float = 0.8,
                 feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07, nce_m: float = 0.5,
                 mode: str = "exact", ce_weight: float = 1.0, kd_weight: float = 0.0, temperature: float = 4.0,
                 feature: str = "pooled", num_data: int | None = None, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if feature not in ("pooled", "logits"):
            raise KdlabError(f"crd: feature must be 'pooled' or 'logits', got {feature!r}")
        if num_data is None or num_data <= 0:
            raise KdlabError("crd needs num_data, the training-set size (filled in from the dataset by "
                             "`kdlab train`; pass num_data=len(train set) when building it directly)")
        if mode not in MODES:
            raise KdlabError(f"crd: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if nce_k <= 0:
            raise KdlabError(f"crd: nce_k must be positive, got {nce_k}")
        self.weight, self.ce_weight, self.kd_weight, self.temperature = weight, ce_weight, kd_weight, temperature
        self.num_data = num_data
        self.contrast_negatives, self.contrast_mode = nce_k, mode
        width = pooled_width if feature == "pooled" else logits_width
        self.feature = feature
        self.embed_s = Embed(width(student, image_size), feat_dim)
        self.embed_t = Embed(width(teacher, image_size), feat_dim)
        self.memory = ContrastMemory(feat_dim, num_data, nce_t, nce_m)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        contrast = batch.extra.get("contrast_index")
        if contrast is None or batch.index is None:
            raise KdlabError("crd needs batch.index and batch.extra['contrast_index'] from the data layer; "
                             f"build the training loader with with_index=True, contrast_negatives="
                             f"{self.contrast_negatives}, contrast_mode={self.contrast_mode!r}")
        if contrast.shape[1] != self.contrast_negatives + 1:
            raise KdlabError(f"crd: contrast_index has {contrast.shape[1] - 1} negatives per sample, "
                             f"expected nce_k={self.contrast_negatives}")
        v_s, v_t = self.embed_s(getattr(s, self.feature)), self.embed_t(getattr(t, self.feature))
        out_s, out_t = self.memory(v_s, v_t, contrast)
        crd = losses.crd_nce(out_s, self.num_data) + losses.crd_nce(out_t, self.num_data)
        if self.training:
            self.memory.update(v_s, v_t, batch.index)
        terms = {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target), "crd": self.weight * crd}
        if self.kd_weight:
            terms["kd"] = self.kd_weight * losses.kd(s.logits, t.logits, self.temperature)
        return terms
