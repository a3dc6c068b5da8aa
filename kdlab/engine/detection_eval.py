"""The detection evaluator: a detector's boxes on a COCO-format split, scored by pycocotools' COCOeval.

``evaluate_detection(model, loader, policy)`` runs the model in eval mode under
``torch.inference_mode`` (and the policy's autocast) over a :class:`~kdlab.data.coco_loader.
DetectionLoader`, maps labels back to the split's category ids and returns COCO's AP, AP50, AP75,
APs, APm and APl in percent (the scale of the published tables); ``AP`` is the primary metric
(registered as the ``"detection"`` task's evaluator in :mod:`kdlab.engine.evaluators`).

Under DDP a loader built with ``shard=(rank, world)`` gives each rank its part of the split: each
rank predicts its images, the detections are gathered to rank 0 (in rank order, so in the split's
order), COCOeval runs once there and its metrics are broadcast, so every rank returns the same
numbers (and takes the same best-checkpoint and early-stopping decisions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from kdlab.data.coco_eval import METRICS, coco_box_metrics, to_coco_detections
from kdlab.engine import distributed
from kdlab.engine.evaluators import register_evaluator
from kdlab.errors import KdlabError

PRIMARY = "AP"


def predict_detections(model: nn.Module, loader: Iterable, policy=None) -> list[dict]:
    """COCO-format detections of ``model`` on the images ``loader`` serves (this rank's part when sharded)."""
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
    return dets


def score_detections(dataset, dets: list[dict]) -> dict[str, float]:
    """COCO box metrics (percent; -1 where a size range has no ground truth) on every image of ``dataset``."""
    stats = coco_box_metrics(dataset.coco, dets, image_ids=dataset.ids)
    out = {k: (100.0 * stats[k] if stats[k] >= 0 else -1.0) for k in METRICS}
    out["n"] = float(len(dataset))
    return out


def evaluate_detection(model: nn.Module, loader: Iterable, policy=None) -> dict[str, float]:
    """COCO box metrics (percent) of ``model`` on every image of ``loader.dataset``, and ``n`` (images)."""
    dets = predict_detections(model, loader, policy)
    if getattr(loader, "shard", (0, 1))[1] == 1:
        return score_detections(loader.dataset, dets)
    parts = distributed.gather_objects(dets)  # rank 0: every rank's detections; None elsewhere
    outcome: tuple[dict[str, float] | None, str | None] = (None, None)
    if parts is not None:
        try:
            outcome = (score_detections(loader.dataset, [d for part in parts for d in part]), None)
        except Exception as e:  # the other ranks wait for the broadcast: tell them, then fail here too
            distributed.broadcast_object((None, f"{type(e).__name__}: {e}".splitlines()[0]))
            raise
    metrics, error = distributed.broadcast_object(outcome)
    if error is not None:
        raise KdlabError(f"rank 0 could not score the gathered detections: {error}")
    return metrics


register_evaluator("detection", evaluate_detection, primary=PRIMARY)
