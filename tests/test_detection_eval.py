"""COCOeval through kdlab: perfect boxes give AP 1, shifted boxes the value computed by hand; the evaluator."""

from __future__ import annotations

import pytest
import torch
from detection_fixtures import TruthDetector, box, image, write_coco

from kdlab.data.coco import CocoSet
from kdlab.data.coco_eval import coco_box_metrics, to_coco_detections
from kdlab.data.coco_loader import DetectionLoader
from kdlab.engine.detection_eval import evaluate_detection


@pytest.fixture
def two_boxes(tmp_path):
    anns = [box(1, 1, [0, 0, 10, 10]), box(2, 2, [0, 0, 10, 10])]  # 10x10: COCO "small" objects
    return CocoSet(*write_coco(tmp_path, [image(1), image(2)], anns))


def _det(image_id, bbox, score, cat=3):
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}


def test_perfect_predictions_give_ap_one(two_boxes):
    m = coco_box_metrics(two_boxes.coco, [_det(1, [0, 0, 10, 10], 0.9), _det(2, [0, 0, 10, 10], 0.8)])
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == m["AP75"] == m["APs"] == pytest.approx(1.0)
    assert m["APm"] == m["APl"] == -1.0  # no medium or large ground truth


def test_shifted_box_gives_the_hand_computed_ap(two_boxes):
    # image 2's box shifted 2 px: IoU = 8*10 / (100 + 100 - 80) = 2/3. At the 4 IoU thresholds
    # 0.50..0.65 both detections match (AP 1); at the 6 thresholds 0.70..0.95 only the 0.9-score
    # one does: precision 1 up to recall 0.5, then nothing, so 51 of COCO's 101 recall points: 51/101.
    m = coco_box_metrics(two_boxes.coco, [_det(1, [0, 0, 10, 10], 0.9), _det(2, [2, 0, 10, 10], 0.8)])
    assert m["AP"] == pytest.approx((4 * 1.0 + 6 * 51 / 101) / 10, abs=1e-9)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(51 / 101)
    only_shifted = coco_box_metrics(two_boxes.coco, [_det(2, [2, 0, 10, 10], 0.8)], image_ids=[2])
    assert only_shifted["AP"] == pytest.approx(0.4)  # 4 of 10 thresholds


def test_detector_outputs_are_mapped_back_to_category_ids_and_xywh():
    out = [{"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "labels": torch.tensor([2]),
            "scores": torch.tensor([0.5])}]
    assert to_coco_detections(out, [7], [3, 9]) == [_det(7, [1.0, 2.0, 10.0, 20.0], 0.5, cat=9)]


def test_evaluator_scores_a_perfect_detector_100_percent(two_boxes):
    model = TruthDetector(two_boxes).train()
    metrics = evaluate_detection(model, DetectionLoader(two_boxes, batch_size=2, train=False))
    assert metrics["AP"] == pytest.approx(100.0) and metrics["APl"] == -1.0 and model.training
