"""Mixup as a KD baseline (Comparative KD's ``mixup``): the student learns from mixed inputs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.losses.mixing import MIX_LOSS_FNS
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method

COMPKD = ("Wilf et al., Comparative Knowledge Distillation, WACV 2025 "
          "(baseline after Zhang et al., mixup, ICLR 2018)")


def within_batch_partners(n: int, sources: int, device: torch.device | str | None = None) -> Tensor:
    """``sources × n`` sample indices: row 0 is ``0..n−1``, row k the k-th partner of each sample.

    One random permutation σ (torch's global RNG) is cut into a cycle: sample ``σ[i]`` is mixed
    with ``σ[i+1]``, ``σ[i+2]``, ... (indices mod n), so the sources of a mix are distinct whenever
    ``n ≥ sources`` and every image appears once in each role.
    """
    order = torch.randperm(n)
    rows = [torch.arange(n)]
    for k in range(1, sources):
        partner = torch.empty_like(order)
        partner[order] = order.roll(-k)
        rows.append(partner)
    return torch.stack(rows).to(device)


def mix_images(images: Tensor, partners: Tensor, weights: Sequence[float]) -> Tensor:
    """``Σ_k weights[k] · images[partners[k]]``."""
    out = float(weights[0]) * images[partners[0]]
    for w, idx in zip(weights[1:], partners[1:]):
        out = out + float(w) * images[idx]
    return out


@register_method("mixup", paper=COMPKD)
class Mixup(Distiller):
    """Mixup KD baseline: student on λx_i + (1−λ)x_j; λ-weighted CE + soft-target CE to the un-mixed teacher.

    After alextxu/ckd ``helper/MixupTrainHelpers.py`` with its defaults: λ ~ Beta(1, 1) drawn
    once per batch; ``w_cls·[λ·CE(z, y_i) + (1−λ)·CE(z, y_j)]`` plus
    ``w_rel·[λ·D(z, z_t,i) + (1−λ)·D(z, z_t,j)]`` where ``z_t`` are the teacher's logits of the
    **un-mixed** images and D is the soft-target CE at T=1 (``loss_fn="ce"``, CompKD's
    ``--loss_fn 0``) or KD at ``temperature`` (``"kl"``, ``--loss_fn 1``); with ``w_kd > 0`` a
    λ-weighted KD term at ``temperature`` (τ=4) is added. Weights w_cls=1, w_rel=1, w_kd=0.

    Partners: ``sampling="batch"`` (default) draws them inside the batch (one random permutation,
    see :func:`within_batch_partners`). ``sampling="pool"`` is CompKD's way: up to ``max_pairs``
    (100k) distinct source tuples are precomputed over the (sub)set and served ``batch_size`` per
    step by the ``"tuples"`` loader (:mod:`kdlab.data.tuples`; every source image with its own
    crop+flip), so each step mixes ``batch_size`` images; the student's logits are then returned
    once per source row, scored against each source's label. CompKD caches the teacher logits
    once per image on one augmented view (``data.cache_teacher``); otherwise the teacher sees the
    current (un-mixed) images. All draws
    use torch's global RNG, which the trainer seeds and checkpoints. ``lam`` fixes the weights
    (a number for λ, or one weight per source summing to 1) for tests and ablations. The logits
    returned for training accuracy are the student's on the mixed input, scored against the
    first source's label.

    Shipped recipes: ``cifar100/{mixup,mixup3,cutmix}/<teacher>_<student>_n4000`` run these baselines
    in CompKD's few-sample setting (``cifar100/few_sample/_recipe.yaml``, cached teacher logits) on
    its three pairs; ``tiny-imagenet/<method>/resnet32x4_resnet8x4`` on full data.
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})
    sources: ClassVar[int] = 2

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, loss_fn: str = "ce",
                 temperature: float = 4.0, w_cls: float = 1.0, w_rel: float = 1.0, w_kd: float = 0.0,
                 mix_alpha: float = 1.0, lam: float | list[float] | None = None, sampling: str = "batch",
                 max_pairs: int = 100_000) -> None:
        super().__init__(student, teacher)
        if sampling not in ("batch", "pool"):
            raise KdlabError(f"{self.method_name}: sampling must be 'batch' (partners from the batch) or 'pool' "
                             f"(CompKD's precomputed tuples); got {sampling!r}")
        self.sampling, self.max_pairs = sampling, max_pairs
        if sampling == "pool":
            self.loader_kind = "tuples"
        if loss_fn not in MIX_LOSS_FNS:
            raise KdlabError(f"{self.method_name}: loss_fn must be one of {', '.join(MIX_LOSS_FNS)}; "
                             f"got {loss_fn!r}")
        if mix_alpha <= 0:
            raise KdlabError(f"{self.method_name}: mix_alpha must be positive, got {mix_alpha}")
        self.loss_fn = loss_fn
        self.temperature = temperature
        self.w_cls, self.w_rel, self.w_kd = w_cls, w_rel, w_kd
        self.mix_alpha = mix_alpha
        self.lam = None if lam is None else self._fixed_weights(lam)
        self.last_mix: dict[str, Tensor] | None = None  # weights and partners of the latest forward

    def _fixed_weights(self, lam: float | Sequence[float]) -> list[float]:
        ws = [float(lam), 1.0 - float(lam)] if isinstance(lam, int | float) else [float(v) for v in lam]
        if len(ws) != self.sources or min(ws) < 0 or not math.isclose(sum(ws), 1.0, abs_tol=1e-6):
            raise KdlabError(f"{self.method_name}: lam must be a number in [0, 1] or {self.sources} "
                             f"non-negative weights summing to 1; got {lam!r}")
        return ws

    @property
    def loader_options(self) -> dict:
        """With ``sampling="pool"``: tuples of ``sources`` images from the ``"tuples"`` loader."""
        return {"pos_and_neg": self.sources, "max_tuples": self.max_pairs} if self.sampling == "pool" else {}

    def partners(self, batch: Batch) -> Tensor:
        """``sources × n`` row indices into the batch: the sources of each of the n mixed images."""
        n, device = batch.image.shape[0], batch.image.device
        if self.sampling == "batch":
            return within_batch_partners(n, self.sources, device)
        if "tuples" not in batch.extra or n % self.sources:
            raise KdlabError(f"{self.method_name}: sampling='pool' needs the tuple loader's batches of "
                             f"{self.sources}-image tuples (build the run with kdlab.experiment)")
        k = self.sources
        return torch.arange(k, device=device)[:, None] + k * torch.arange(n // k, device=device)[None]

    # ---- the random parts (torch's global RNG) -------------------------------------------
    def draw_weights(self) -> list[float]:
        """The source weights of one batch: ``[λ, 1−λ]`` with λ ~ Beta(mix_alpha, mix_alpha)."""
        if self.lam is not None:
            return list(self.lam)
        a = torch.tensor(float(self.mix_alpha))
        lam = float(torch.distributions.Beta(a, a).sample())
        return [lam, 1.0 - lam]

    def mix(self, images: Tensor, partners: Tensor) -> tuple[Tensor, list[float]]:
        """The student's input and the weights its loss uses (CutMix recomputes them)."""
        weights = self.draw_weights()
        return mix_images(images, partners, weights), weights

    # ---- running -------------------------------------------------------------------------
    def forward(self, images: Tensor | Batch, targets: Tensor | None = None, *, epoch: int = 1,
                index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        batch = images if isinstance(images, Batch) else Batch(images, targets, index=index, epoch=epoch)
        t = self.teacher_features(batch)  # the un-mixed images (or their cached logits)
        partners = self.partners(batch)
        mixed, weights = self.mix(batch.image, partners)
        s = self._rec_s(mixed)
        self.last_mix = {"weights": torch.tensor(weights, dtype=torch.float64), "partners": partners}
        batch = dataclasses.replace(batch, extra={**batch.extra, "mix_weights": self.last_mix["weights"],
                                                  "mix_partners": partners})
        logits, terms = self.student_logits(s, batch), self.losses(s, t, batch)
        if self.sampling == "pool":  # one row per source image, so that logits align with batch.target
            logits = logits.repeat_interleave(self.sources, dim=0)
        return logits, terms

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        """The λ-weighted terms; a batch without a mix (``forward`` adds one) counts as un-mixed."""
        if "mix_partners" in batch.extra:
            weights = batch.extra["mix_weights"].tolist()
            partners = batch.extra["mix_partners"]
        else:
            weights, partners = [1.0], torch.arange(batch.target.shape[0], device=batch.target.device)[None]
        terms = {"ce": self.w_cls * losses.mixed_ce(s.logits, [batch.target[p] for p in partners], weights)}
        teacher = [t.logits[p] for p in partners]
        if self.w_rel:
            terms["rel"] = self.w_rel * losses.mixed_distill(s.logits, teacher, weights, self.loss_fn,
                                                             self.temperature)
        if self.w_kd:
            terms["kd"] = self.w_kd * losses.mixed_distill(s.logits, teacher, weights, "kl", self.temperature)
        return terms
