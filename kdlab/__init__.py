"""kdlab: knowledge distillation for image classification.

Public API::

    import kdlab
    student = kdlab.create_model("resnet8x4", num_classes=100)
    teacher = kdlab.create_model("resnet32x4", num_classes=100)
    distiller = kdlab.create_distiller("dkd", student=student, teacher=teacher, beta=8.0)
    logits, losses = distiller(images, targets, epoch=1)
    kdlab.losses.kd(logits_s, logits_t, temperature=4.0)
"""

from kdlab import losses
from kdlab.config import Config, load_config
from kdlab.errors import KdlabError
from kdlab.methods import create_distiller, list_methods
from kdlab.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["Config", "KdlabError", "create_distiller", "create_model", "list_methods", "list_models",
           "load_config", "losses", "__version__"]
