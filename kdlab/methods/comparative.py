"""Comparative KD (Wilf et al.): the student matches the teacher's logit *differences* between groups."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.losses.comparative import COMBINE_MODES, COMPARATIVE_LOSS_FNS
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("comparative", paper="Wilf et al., Comparative Knowledge Distillation, WACV 2025 (CompKD)")
class Comparative(Distiller):
    """CompKD: MSE between student and teacher group-mean logit differences over sampled tuples.

    After alextxu/ckd (``dataset/sampling/CKDSample.py``, ``helper/CKDTrainHelpers.py``). The
    training loader is the ``"tuples"`` loader (:mod:`kdlab.data.tuples`): each step holds
    ``batch_size`` tuples of ``pos_and_neg`` images, P positives then Q = ⌊(P+Q)/2⌋ negatives,
    drawn from ``max_rel_samples`` precomputed distinct tuples; every image has its own fresh
    augmentation. With group means ``Δz = mean(z_P) − mean(z_Q)`` of the student (``Δz^s``) and of
    the teacher logits (``Δz^t``, cached once per image when ``data.cache_teacher`` is on, as in
    CompKD) and ``Δy`` of the one-hot labels, the loss is
    ``w_cls·MSE(Δz^s, Δy) + w_rel·MSE(Δz^s, Δz^t) + w_kd·KD_τ(Δz^s, Δz^t)`` (w_cls 1, w_rel 1,
    w_kd 0, τ 4). ``mode`` selects CompKD's ablations: ``ckd`` (difference), ``ckd_add`` (average
    of the group means) and ``ckd_mixup`` (``λ·mean_P + (1−λ)·mean_Q``, λ ~ Beta(1, 1) per batch
    from torch's global RNG). ``loss_fn="kl"`` uses the τ²-scaled KL for the cls and rel terms, as
    the first public release (62ba741) did.

    As in CompKD the student sees the positives and the negatives in two forward passes
    (``split_forward``; BN statistics per group); False runs one pass over the whole batch.
    Evaluation is the plain single-image top-1 of the student. The logits returned for training
    accuracy are the student's per image, scored against each image's own label.

    Shipped recipes: ``cifar100/comparative/<teacher>_<student>_n<N>`` for CompKD's three pairs and
    N = 2000…6000, on the method-neutral few-sample recipe ``cifar100/few_sample/_recipe.yaml``.
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})
    needs_index = True
    loader_kind: ClassVar[str] = "tuples"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, pos_and_neg: int = 3,
                 max_rel_samples: int = 100_000, w_cls: float = 1.0, w_rel: float = 1.0, w_kd: float = 0.0,
                 temperature: float = 4.0, mode: str = "ckd", loss_fn: str = "mse",
                 split_forward: bool = True) -> None:
        super().__init__(student, teacher)
        if pos_and_neg not in (2, 3):
            raise KdlabError(f"comparative: pos_and_neg must be 2 or 3, got {pos_and_neg}")
        if mode not in COMBINE_MODES:
            raise KdlabError(f"comparative: mode must be one of {', '.join(COMBINE_MODES)}, got {mode!r}")
        if loss_fn not in COMPARATIVE_LOSS_FNS:
            raise KdlabError(f"comparative: loss_fn must be one of {', '.join(COMPARATIVE_LOSS_FNS)}, "
                             f"got {loss_fn!r}")
        self.pos_and_neg, self.max_rel_samples = pos_and_neg, max_rel_samples
        self.w_cls, self.w_rel, self.w_kd = w_cls, w_rel, w_kd
        self.temperature, self.mode, self.loss_fn = temperature, mode, loss_fn
        self.split_forward = split_forward
        self.last_lam: float | None = None

    @property
    def loader_options(self) -> dict[str, Any]:
        """What the experiment passes to the ``"tuples"`` loader."""
        return {"pos_and_neg": self.pos_and_neg, "max_tuples": self.max_rel_samples}

    def _split(self, batch: Batch) -> tuple[int, int]:
        split = batch.extra.get("tuple_split")
        if split is None:
            raise KdlabError("comparative needs the tuple loader (batch.extra['tuple_split']); build the "
                             "experiment with kdlab.experiment or a kdlab.data.tuples.TupleLoader")
        pos, neg = (int(v) for v in split.tolist())
        if batch.image.shape[0] % (pos + neg):
            raise KdlabError(f"comparative: {batch.image.shape[0]} images do not form tuples of {pos + neg}")
        return pos, neg

    def forward(self, images: Tensor | Batch, targets: Tensor | None = None, *, epoch: int = 1,
                index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        batch = images if isinstance(images, Batch) else Batch(images, targets, index=index, epoch=epoch)
        pos, neg = self._split(batch)
        k = pos + neg
        x = batch.image
        b = x.shape[0] // k
        if self.split_forward:
            groups = x.view(b, k, *x.shape[1:])
            zp = self._rec_s(groups[:, :pos].reshape(b * pos, *x.shape[1:])).logits
            zn = self._rec_s(groups[:, pos:].reshape(b * neg, *x.shape[1:])).logits
            zs = torch.cat([zp.view(b, pos, -1), zn.view(b, neg, -1)], dim=1).reshape(b * k, -1)
        else:
            zs = self._rec_s(x).logits
        t = self.teacher_features(batch)
        return zs, self.losses(Features(logits=zs), t, batch)

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        pos, neg = self._split(batch)
        k = pos + neg
        b = s.logits.shape[0] // k
        lam = 0.5
        if self.mode == "ckd_mixup":
            a = torch.tensor(1.0)
            lam = float(torch.distributions.Beta(a, a).sample())
        self.last_lam = lam
        parts = losses.comparative(s.logits.view(b, k, -1), t.logits.view(b, k, -1), batch.target.view(b, k),
                                   pos, mode=self.mode, lam=lam, loss_fn=self.loss_fn,
                                   temperature=self.temperature)
        terms = {"cls": self.w_cls * parts["cls"]}
        if self.w_rel:
            terms["rel"] = self.w_rel * parts["rel"]
        if self.w_kd:
            terms["kd"] = self.w_kd * parts["kd"]
        return terms
