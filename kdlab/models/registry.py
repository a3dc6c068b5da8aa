"""The model registry: one name -> factory table for the CIFAR KD zoo.

A factory has the signature ``f(num_classes: int, **kw) -> nn.Module`` and is added with the
:func:`register_model` decorator. Names follow the reference repositories (RepDistiller,
mdistiller, SimKD) so that their configs translate one to one. ImageNet-scale models from
torchvision and timm are not registered here; :func:`kdlab.models.create_model` reaches them by
prefix (see :mod:`kdlab.models.external`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kdlab.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory ``f(num_classes, **kw) -> nn.Module`` under ``name``."""
    return MODELS.register(name)
