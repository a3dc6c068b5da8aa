"""Embedding heads that map a network's pooled feature to a common width (CC, CRD)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LinearEmbed(nn.Module):
    """Flatten, then ``Linear(in_dim → out_dim)``; no normalisation (RepDistiller ``LinearEmbed``, CC)."""

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


class Embed(nn.Module):
    """Flatten, ``Linear(in_dim → out_dim)``, then L2-normalise each row (CRD ``Embed_s``/``Embed_t``).

    The reference divides by the plain norm; ``F.normalize`` adds a 1e-12 floor, which only matters
    for an all-zero row.
    """

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), p=2, dim=1)


def _head_width(model: nn.Module, image_size: int, part: str) -> int:
    from kdlab.features import feature_shapes, get_taps

    head = model.get_submodule(get_taps(model).classifier)
    if isinstance(head, nn.Linear):
        return head.in_features if part == "pooled" else head.out_features
    return feature_shapes(model, image_size)[part][0]


def pooled_width(model: nn.Module, image_size: int = 32) -> int:
    """Width of a model's pooled feature (the classifier's input).

    Read from a ``Linear`` classifier's ``in_features``; other heads are probed with a dummy
    forward at ``image_size``.
    """
    return _head_width(model, image_size, "pooled")


def logits_width(model: nn.Module, image_size: int = 32) -> int:
    """Number of logits (a ``Linear`` classifier's ``out_features``; other heads are probed)."""
    return _head_width(model, image_size, "logits")
