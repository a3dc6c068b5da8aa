"""Faster R-CNN with FPN on ResNet18/50/101 and MobileNetV2 backbones, from torchvision's builders.

The detection pairs of mdistiller / the DKD paper (ResNet101→ResNet18, ResNet101→ResNet50,
ResNet50→MobileNetV2). Every backbone gives five 256-channel FPN levels (strides 4, 8, 16, 32 and
the max-pooled 64: torchvision keys ``"0".."3", "pool"``, Detectron2's p2..p6), so ReviewKD pairs
levels one to one. Options (``student.kwargs`` / ``teacher.kwargs`` of a recipe):

* ``min_size`` / ``max_size``: the detector's own resize (COCO: 800 / 1333; 64-pixel images: 128);
* ``anchor_sizes``: one size per level (default 32, 64, 128, 256, 512; smaller for tiny images);
* ``norm``: ``"frozen"`` (FrozenBatchNorm, for ImageNet-initialised backbones, as torchvision and
  Detectron2) or ``"bn"`` (trainable BatchNorm, for training from scratch);
* ``trainable_layers``: backbone stages left trainable (None: all of them);
* ``representation_size``: width of the two-layer box head (torchvision: 1024; smaller for CPU runs);
* ``roi_sampling_ratio``: ROIAlign samples per bin side (torchvision: 2; 1 is ~4x cheaper on CPU);
* ``backbone_weights``: a torchvision weights name for the backbone (e.g. ``"DEFAULT"``; needs
  the weights in the torch hub cache, nothing is downloaded here).

Teacher weights come from ``teacher.checkpoint``: a torchvision detection checkpoint (a raw state
dict) or a kdlab run's checkpoint, through :func:`kdlab.models.load_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

from kdlab.errors import KdlabError, closest
from kdlab.models.checkpoint import load_checkpoint

BACKBONES = {"resnet18": "resnet", "resnet50": "resnet", "resnet101": "resnet", "mobilenet_v2": "mobilenet"}
ALL_LAYERS = {"resnet": 5, "mobilenet": 6}
DETECTORS: dict[str, Callable[..., FasterRCNN]] = {}


def _norm(norm: str) -> type[nn.Module]:
    if norm not in ("frozen", "bn"):
        raise KdlabError(f"detector norm must be 'frozen' or 'bn', got {norm!r}")
    return FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d


def faster_rcnn_fpn(backbone: str, num_classes: int, *, min_size: int = 800, max_size: int = 1333,
                    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512), norm: str = "frozen",
                    trainable_layers: int | None = None, backbone_weights: str | None = None,
                    representation_size: int = 1024, roi_sampling_ratio: int = 2, **detector_kw: Any) -> FasterRCNN:
    """A torchvision Faster R-CNN with a five-level FPN on ``backbone`` (see the module docstring)."""
    if backbone not in BACKBONES:
        raise KdlabError(f"unknown detection backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    if num_classes < 2:
        raise KdlabError(f"a detector needs num_classes >= 2 (background + classes), got {num_classes}")
    if len(anchor_sizes) != 5:
        raise KdlabError(f"anchor_sizes needs one size per FPN level (5), got {list(anchor_sizes)}")
    family = BACKBONES[backbone]
    layers = ALL_LAYERS[family] if trainable_layers is None else trainable_layers
    common = dict(weights=backbone_weights, norm_layer=_norm(norm), trainable_layers=layers,
                  returned_layers=[1, 2, 3, 4])
    if family == "resnet":
        body = resnet_fpn_backbone(backbone_name=backbone, **common)
    else:
        body = mobilenet_backbone(backbone_name=backbone, fpn=True, **common)
    anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    if representation_size != 1024:  # torchvision's box head is two 1024-wide layers on 7x7 ROI features
        detector_kw["box_head"] = TwoMLPHead(body.out_channels * 7 * 7, representation_size)
        detector_kw["box_predictor"] = FastRCNNPredictor(representation_size, num_classes)
        num_classes = None  # given through the predictor
    if roi_sampling_ratio != 2:  # torchvision's default; 1 makes ROIAlign (slow backward on CPU) ~4x cheaper
        detector_kw["box_roi_pool"] = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, roi_sampling_ratio)
    return FasterRCNN(body, num_classes=num_classes, min_size=min_size, max_size=max_size,
                      rpn_anchor_generator=anchors, **detector_kw)


for _name, _backbone in (("fasterrcnn_resnet18_fpn", "resnet18"), ("fasterrcnn_resnet50_fpn", "resnet50"),
                         ("fasterrcnn_resnet101_fpn", "resnet101"),
                         ("fasterrcnn_mobilenetv2_fpn", "mobilenet_v2")):
    DETECTORS[_name] = partial(faster_rcnn_fpn, _backbone)


def is_detector(name: str) -> bool:
    return name in DETECTORS


def check_detector_name(name: str) -> None:
    if name not in DETECTORS:
        near = closest(name, list(DETECTORS))
        hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(DETECTORS)}"
        raise KdlabError(f"unknown detector {name!r}; {hint}")


def create_detector(name: str, num_classes: int, checkpoint: str | Path | None = None, **kw: Any) -> FasterRCNN:
    """Build detector ``name`` for ``num_classes`` (background included), optionally with weights."""
    check_detector_name(name)
    try:
        model = DETECTORS[name](num_classes, **kw)
    except TypeError as e:
        raise KdlabError(f"detector {name!r}: {e}") from None
    if checkpoint:
        load_checkpoint(model, Path(checkpoint).expanduser())
    return model
