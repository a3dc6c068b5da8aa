"""USKD (Yang et al., ICCV 2023): self-distillation with customized soft labels and a weak head."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features, feature_shapes
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.nkd import PAPER
from kdlab.methods.registry import register_method

PROBE_SIZES = (32, 224)  # dummy-forward sizes tried, in order, when no image_size is given


def pool_feature(f: Tensor) -> Tensor:
    """One vector per sample: GAP of a B×C×H×W map, the first (class) token of B×N×D, or B×D as is."""
    if f.dim() == 4:
        return f.mean(dim=(2, 3))
    if f.dim() == 3:
        return f[:, 0]
    if f.dim() == 2:
        return f
    raise KdlabError(f"uskd: cannot pool a feature of shape {tuple(f.shape)}")


def _shapes(student: nn.Module, image_size: int | None) -> dict:
    """Feature shapes from one dummy forward at ``image_size`` (or the first size the model accepts)."""
    declared = getattr(getattr(student, "patch_embed", None), "img_size", None)  # a timm ViT's fixed size
    sizes = (image_size,) if image_size else ((declared[0],) if declared else PROBE_SIZES)
    error: Exception | None = None
    for size in sizes:
        try:
            return feature_shapes(student, size)
        except KdlabError:
            raise
        except Exception as e:  # the model rejects this input size: try the next one
            error = e
    raise KdlabError(f"uskd: could not run {type(student).__name__} on a dummy {sizes[-1]} px input to size "
                     f"the auxiliary head ({error}); set method.params.image_size to the input size")


def default_stage(stages: list[tuple[int, ...]]) -> int:
    """``-2`` (the stage before the last) for CNN maps; for token stages (N×D) the middle block.

    A ViT's ``stages[k]`` is the output of block ``k−1``; the reference reads the class token of
    block ``L/2 − 1`` (L blocks), i.e. ``stages[L // 2]``.
    """
    if len(stages[-1]) == 2:  # N×D tokens: stem + L blocks
        return (len(stages) - 1) // 2
    return -2


def _probe(student: nn.Module, stage: int | None, image_size: int | None) -> tuple[int, int, int]:
    """(the stage read, its width after :func:`pool_feature`, number of classes)."""
    shapes = _shapes(student, image_size)
    stages = shapes["stages"]
    if stage is None:
        stage = default_stage(stages)
    if not -len(stages) <= stage < len(stages):
        raise KdlabError(f"uskd: feature_stage={stage} is out of range; the student has {len(stages)} "
                         f"stages (stem first, deepest last), so use -{len(stages)}..{len(stages) - 1}")
    shape = stages[stage]
    width = shape[0] if len(shape) == 3 else shape[-1]  # C of C×H×W; D of N×D or D
    return stage, width, shapes["logits"][0]


@register_method("uskd", paper=PAPER)
class USKD(Distiller):
    """Universal self-KD (no teacher): CE + customized target and Zipf non-target labels + a weak head.

    Follows yzd-v/cls_KD ``mmcls/models/dis_losses/uskd.py`` and its distiller (``sd=True``):
    a ``Linear(channels → classes)`` auxiliary head reads the pooled ``stages[feature_stage]``.
    The default (``None``) follows the reference: for a CNN ``-2``, the stage before the last,
    GAP'd, as ``neck(fea_s[-2])``; for a ViT the class token of block ``L/2 − 1`` (``stages[L//2]``,
    see :func:`default_stage`). Its width is found by a dummy forward at ``image_size`` (filled
    from the dataset by ``kdlab train``; 32 px, then 224 px, when not given). The loss is
    ``ce_weight·CE + alpha·L_t + beta·L_non + mu·L_weak`` (:func:`kdlab.losses.uskd_parts`):

    * ``L_t``: CE on the ground truth scaled by the detached soft label ``p_gt² + 1 − mean(p_gt²)``;
    * ``L_weak``: the head's CE against labels smoothed by ``label_smoothing`` (0.1);
    * ``L_non``: soft CE over the non-target classes against Zipf (1/rank) labels. Classes are
      ranked by the head's normalised probabilities plus the student's normalised scores; as
      implemented those scores are the **log**-softmax (the paper reads as probabilities). The
      quirk is kept on purpose; ``rank_on_log_softmax=False`` gives the softmax reading.

    Defaults are cls_KD's CIFAR-100 ones (alpha 0.1, beta 0.1, mu 0.1); its ImageNet configs use
    alpha 1, beta 0.1, mu 0.005. The head is an extra trainable parameter
    (:meth:`extra_parameters`) and is not part of :meth:`inference_model`.
    """

    needs = Needs.of(student={"logits", "stages"}, teacher=set())
    uses_teacher = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, alpha: float = 0.1,
                 beta: float = 0.1, mu: float = 0.1, feature_stage: int | None = None,
                 label_smoothing: float = 0.1, rank_on_log_softmax: bool = True,
                 ce_weight: float = 1.0, image_size: int | None = None) -> None:
        super().__init__(student, teacher)
        feature_stage, width, num_classes = _probe(student, feature_stage, image_size)
        p = next(student.parameters(), None)
        self.aux_head = nn.Linear(width, num_classes)
        if p is not None:
            self.aux_head.to(device=p.device, dtype=p.dtype)
        self.alpha, self.beta, self.mu = alpha, beta, mu
        self.feature_stage = feature_stage
        self.label_smoothing = label_smoothing
        self.rank_on_log_softmax = rank_on_log_softmax
        self.ce_weight = ce_weight

    def aux_logits(self, s: Features) -> Tensor:
        """The weak head's logits for the recorded student features."""
        return self.aux_head(pool_feature(s.stages[self.feature_stage]))

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        loss_t, loss_non, loss_weak = losses.uskd_parts(
            s.logits, self.aux_logits(s), batch.target, self.label_smoothing, self.rank_on_log_softmax)
        return {
            "ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
            "uskd_target": self.alpha * loss_t,
            "uskd_non_target": self.beta * loss_non,
            "uskd_weak": self.mu * loss_weak,
        }
