"""Model zoo: the CIFAR KD architectures, plus torchvision/timm models by prefix.

Public API::

    create_model(name, num_classes=100, **kw)   # zoo name, "torchvision:<name>" or "timm:<name>"
    list_models()                               # zoo names
    load_checkpoint(model, path, strict=True)   # -> the checkpoint's other entries
    count_parameters(model)                     # trainable parameters

Every model carries ``model.taps`` (:class:`kdlab.features.Taps`): where its stage outputs,
pre-activations, pooled embedding and classifier live, for :class:`kdlab.features.FeatureRecorder`.
"""

from kdlab.models import (  # noqa: F401  (imported to register the zoo)
    mobilenetv1,
    mobilenetv2,
    resnet_cifar,
    resnet_cifar_big,
    shufflenetv1,
    shufflenetv2,
    vgg,
    vit,
    wrn,
)
from kdlab.models.checkpoint import count_parameters, load_checkpoint
from kdlab.models.factory import check_model_name, create_model, list_models
from kdlab.models.registry import MODELS, register_model

__all__ = [
    "MODELS",
    "check_model_name",
    "count_parameters",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
]
