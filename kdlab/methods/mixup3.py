"""Three-way mixup as a KD baseline (Comparative KD's ``mixup3``, first public release only)."""

from __future__ import annotations

import torch

from kdlab.methods.mixup import COMPKD, Mixup
from kdlab.methods.registry import register_method


@register_method("mixup3", paper=COMPKD)
class Mixup3(Mixup):
    """Three-way mixup KD baseline: student on Σ_k λ_k x_k, λ = three Beta(1,1) draws normalised to sum 1.

    After alextxu/ckd commit 62ba741 (``helper/MixupThreeTrainHelpers.py``; the files were
    deleted at HEAD though the README still lists ``mixup3``): the weights are three independent
    Beta(mix_alpha, mix_alpha) draws divided by their sum, which is **not** a Dirichlet(1, 1, 1)
    draw. The CE, KD and relational terms are the λ-weighted sums over the three sources, as in
    :class:`~kdlab.methods.mixup.Mixup` (same hyper-parameters and defaults; ``lam`` takes three
    weights). Each sample's two partners come from one random permutation of the batch (see
    :func:`~kdlab.methods.mixup.within_batch_partners`); CompKD precomputes up to 100k distinct
    ordered triples over the (sub)set instead. Shipped recipes: see :class:`~kdlab.methods.mixup.Mixup`.
    """

    sources = 3

    def draw_weights(self) -> list[float]:
        if self.lam is not None:
            return list(self.lam)
        a = torch.tensor(float(self.mix_alpha))
        g = torch.distributions.Beta(a, a).sample((3,)).double()
        return (g / g.sum()).tolist()
