"""The detection evaluator: a detector's boxes on a COCO-format split, scored by pycocotools' COCOeval.

``evaluate_detection(model, loader, policy)`` runs the model in eval mode under
``torch.inference_mode`` (and the policy's autocast) over a :class:`~kdlab.data.coco_loader.
DetectionLoader`, maps labels back to the split's category ids and returns COCO's AP, AP50, AP75,
APs, APm and APl in percent (the scale of the published tables); ``AP`` is the primary metric
(registered as the ``"detection"`` task's evaluator in :mod:`kdlab.engine.evaluators`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from kdlab.data.coco_eval import METRICS, coco_box_metrics, to_coco_detections
from kdlab.engine.evaluators import register_evaluator

PRIMARY = "AP"


def evaluate_detection(model: nn.Module, loader: Iterable, policy=None) -> dict[str, float]:
    """COCO box metrics (percent) of ``model`` on every image of ``loader.dataset``, and ``n`` (images)."""
    dataset = loader.dataset
    device = policy.device if policy is not None else next(model.parameters()).device
    autocast = policy.autocast() if policy is not None and hasattr(policy, "autocast") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    dets: list[dict] = []
    try:
        with torch.inference_mode(), autocast:
            for batch in loader:
                outputs = model([im.to(device, non_blocking=True) for im in batch.images])
                ids = [t["image_id"] for t in batch.targets]
                dets += to_coco_detections(outputs, ids, dataset.cat_ids)
    finally:
        model.train(was_training)
    stats = coco_box_metrics(dataset.coco, dets, image_ids=dataset.ids)
    out = {k: (100.0 * stats[k] if stats[k] >= 0 else -1.0) for k in METRICS}
    out["n"] = float(len(dataset))
    return out


register_evaluator("detection", evaluate_detection, primary=PRIMARY)
