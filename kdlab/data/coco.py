"""COCO-format detection data: a checked dataset, v2 transforms that move boxes with the image, a batch.

:class:`CocoSet` reads an image folder plus a COCO ``instances`` JSON through torchvision's
``CocoDetection`` and returns ``(image, target)`` with ``image`` a float C×H×W tensor in [0, 1]
and ``target`` a dict: ``boxes`` (a ``tv_tensors.BoundingBoxes``, XYXY, in pixels of the returned
image), ``labels`` (contiguous 1..K; 0 is the background of torchvision's detectors) and
``image_id`` (``label_by_id=True``: the label is the category id itself, so COCO keeps the 91
outputs of torchvision's COCO-trained detectors and their checkpoints load). The transforms are
torchvision's v2 ones, so boxes follow the resize and the flip.

Bad inputs (also in docs/detection.md):

* a missing annotation file or image folder: one :class:`KdlabError` line naming the expected layout;
* an annotation whose ``category_id`` is not in ``categories``: one line naming the annotation;
* a box partly outside its image: clamped to the image; a box left empty (or with w/h <= 0):
  dropped, as torchvision's ``SanitizeBoundingBoxes`` does;
* an image with no boxes: left out of the training split (Detectron2's
  ``FILTER_EMPTY_ANNOTATIONS``), kept in evaluation (COCOeval counts its false positives);
* ``iscrowd`` annotations: not trained on; COCOeval treats them as "ignore" regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection
from torchvision.transforms import v2

from kdlab.data.batch import Batch
from kdlab.errors import KdlabError

Target = dict[str, Any]


@dataclass
class DetectionBatch(Batch):
    """Images of different sizes and their targets; what a detection distiller receives.

    A :class:`~kdlab.data.batch.Batch` whose ``image`` is a list of C×H×W images (not one tensor,
    so the trainer leaves image preparation to the detector's own transform) and whose ``target``
    is a list of target dicts; ``images`` / ``targets`` name the same lists. It follows the
    trainer's batch protocol: ``.to(device)``, ``len()``, ``epoch``/``step`` set per step.
    """

    image: list[Tensor] = field(default_factory=list)
    target: list[Target] = field(default_factory=list)

    @property
    def images(self) -> list[Tensor]:
        return self.image

    @property
    def targets(self) -> list[Target]:
        return self.target

    def __len__(self) -> int:
        return len(self.image)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> DetectionBatch:
        def mv(v: Any) -> Any:
            return v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
        return DetectionBatch([im.to(device, non_blocking=non_blocking) for im in self.image],
                              [{k: mv(v) for k, v in t.items()} for t in self.target], None,
                              self.epoch, self.step, dict(self.extra))


def collate(items: list[tuple[Tensor, Target]]) -> DetectionBatch:
    """A list of ``(image, target)`` pairs as one :class:`DetectionBatch` (no padding: sizes differ)."""
    targets = [{**t, "boxes": t["boxes"].as_subclass(Tensor)} for _, t in items]  # plain tensors for the model
    return DetectionBatch([im.as_subclass(Tensor) for im, _ in items], targets)


def detection_transform(train: bool, short_side: int | None = None, max_size: int | None = None,
                        flip: bool = True) -> v2.Compose:
    """Image to float [0, 1]; in training resize to ``short_side`` (longer side capped at ``max_size``)
    and flip horizontally with p=0.5; always clamp boxes to the image and drop empty ones."""
    ops: list[Any] = [v2.ToImage()]
    if train and short_side:
        ops.append(v2.Resize(short_side, max_size=max_size, antialias=True))
    if train and flip:
        ops.append(v2.RandomHorizontalFlip(0.5))
    ops += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(ops)


class CocoSet(torch.utils.data.Dataset):
    """A COCO-format split: ``image_root`` + ``ann_file``, checked on load (see the module docstring)."""

    def __init__(self, image_root: str | Path, ann_file: str | Path, *, transform: v2.Compose | None = None,
                 drop_empty: bool = False, layout: str = "an image folder and a COCO instances JSON",
                 label_by_id: bool = False) -> None:
        image_root, ann_file = Path(image_root), Path(ann_file)
        if not ann_file.is_file():
            raise KdlabError(f"annotation file {ann_file} does not exist; expected {layout}")
        if not image_root.is_dir():
            raise KdlabError(f"image folder {image_root} does not exist; expected {layout}")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.base = CocoDetection(str(image_root), str(ann_file))
        self.coco = self.base.coco
        cats = sorted(self.coco.cats)
        if not cats:
            raise KdlabError(f"{ann_file} lists no categories")
        if label_by_id:  # label = category id (COCO: 91 outputs, as torchvision's COCO-trained detectors)
            cats = list(range(1, max(cats) + 1))
        self.cat_ids = cats
        self.classes = [self.coco.cats[c]["name"] if c in self.coco.cats else "N/A" for c in cats]
        self.label_of = {c: i + 1 for i, c in enumerate(cats) if c in self.coco.cats}
        for ann in self.coco.dataset.get("annotations", []):
            if ann.get("category_id") not in self.label_of:
                raise KdlabError(f"{ann_file}: annotation {ann.get('id')} (image {ann.get('image_id')}) has "
                                 f"category_id {ann.get('category_id')!r}, which is not in its categories list")
        ids = list(self.base.ids)
        if drop_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        self.ids = ids
        self.transform = transform or detection_transform(train=False)
        self.train = drop_empty
        self.seeds: dict[int, int] = {}

    @property
    def num_classes(self) -> int:
        """Foreground classes + the background (what torchvision's detectors are built with)."""
        return len(self.cat_ids) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def raw(self, i: int) -> tuple[tv_tensors.Image, Target]:
        """Item ``i`` before the transform: the image and its boxes as COCO stores them (XYWH -> XYXY)."""
        image_id = self.ids[i]
        image = self.base._load_image(image_id).convert("RGB")
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not (self.train and a.get("iscrowd", 0))]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        size = (image.height, image.width)
        boxes = tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=size)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        return tv_tensors.Image(v2.functional.pil_to_tensor(image)), {
            "boxes": boxes, "labels": labels, "image_id": image_id, "orig_size": size}

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Target]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        image, target = self.raw(i)
        if seed is None:
            return self.transform(image, target)
        with torch.random.fork_rng(devices=[]):  # the flip depends on (seed, epoch, index) only
            torch.manual_seed(seed)
            return self.transform(image, target)
