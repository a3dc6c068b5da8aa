"""DIST (Huang et al., NeurIPS 2022): inter- and intra-class Pearson relations of softened outputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import register_method


@register_method("dist", paper="Huang et al., Knowledge Distillation from A Stronger Teacher, NeurIPS 2022")
class DIST(Distiller):
    """DIST: CE + kd_weight·τ²·(beta·inter + gamma·intra), Pearson relations on softmax(z/τ).

    ``inter`` correlates each sample's class distribution (rows), ``intra`` each class's scores
    across the batch (columns); see :func:`kdlab.losses.dist`. Defaults are the CIFAR-100 ones of
    hunto/image_classification_sota (DIST_KD's classification code),
    ``configs/strategies/distill/dist_cifar.yaml``: ``ori_loss_weight 1``, ``kd_loss_weight 2``,
    ``kd: dist_t4`` (τ=4, beta = gamma = 1, ``lib/models/losses/kd_loss.py``); alextxu/ckd's
    ``DIST.py`` also defaults to τ=4. ImageNet (``resnet_dist.yaml``) uses τ=1 with the same
    weights. The intra term needs more than one sample per batch (one sample gives intra = 1).
    """

    needs = Needs.of(student={"logits"}, teacher={"logits"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *,
                 temperature: float = 4.0, beta: float = 1.0, gamma: float = 1.0,
                 ce_weight: float = 1.0, kd_weight: float = 2.0) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.beta, self.gamma = beta, gamma
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "dist": self.kd_weight * losses.dist(s.logits, t.logits, self.beta, self.gamma, self.temperature),
        }
