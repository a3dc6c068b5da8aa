"""COCO box metrics through pycocotools' COCOeval: AP, AP50, AP75, APs, APm, APl.

:func:`coco_box_metrics` scores a list of COCO-format detections (``image_id``, ``category_id``,
``bbox`` as [x, y, w, h] in original-image pixels, ``score``) against a ground-truth ``COCO``
object, as fractions in [0, 1] (COCOeval's own scale; -1 where a size range has no ground truth).
:func:`to_coco_detections` turns a detector's per-image outputs (XYXY boxes, contiguous labels)
into that list.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_coco_detections(outputs: Sequence[dict[str, Tensor]], image_ids: Sequence[int],
                       cat_ids: Sequence[int], scale: Sequence[tuple[float, float]] | None = None) -> list[dict]:
    """Per-image ``{"boxes" (XYXY), "labels" (1..K), "scores"}`` -> COCO result dicts.

    ``cat_ids[k - 1]`` is the category id of label ``k``; ``scale`` (optional, per image
    ``(sx, sy)``) maps boxes back to the original image's pixels.
    """
    dets: list[dict] = []
    for i, (out, image_id) in enumerate(zip(outputs, image_ids, strict=True)):
        boxes = out["boxes"].detach().float().cpu()
        if scale is not None:
            sx, sy = scale[i]
            boxes = boxes * torch.tensor([sx, sy, sx, sy])
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, label, score in zip(xywh, out["labels"].tolist(), out["scores"].tolist()):
            dets.append({"image_id": int(image_id), "category_id": int(cat_ids[int(label) - 1]),
                         "bbox": [round(v, 3) for v in box], "score": float(score)})
    return dets


def coco_box_metrics(coco_gt: COCO, detections: list[dict], image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """COCOeval (bbox) of ``detections`` on ``image_ids`` (default: every image of ``coco_gt``).

    No detection at all gives 0 for every metric (pycocotools cannot load an empty result list).
    """
    ids = sorted(coco_gt.getImgIds() if image_ids is None else set(image_ids))
    if not detections:
        return {k: 0.0 for k in METRICS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(METRICS, ev.stats[:6])}
