"""Detection distillers: the unrolled student forward is torchvision's, DKD on ROI logits is losses.dkd,
the teacher gets no gradient and stays unchanged, every method steps on every pair (slow for the big ones)."""

from __future__ import annotations

import functools

import pytest
import torch

import kdlab
from kdlab import losses
from kdlab.data.coco import DetectionBatch
from kdlab.errors import KdlabError
from kdlab.methods.det_base import DET_TERMS, student_features
from kdlab.models.detection import create_detector

TINY = dict(min_size=64, max_size=64, anchor_sizes=(8, 16, 32, 64, 128), norm="bn", box_batch_size_per_image=32,
            rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=200,
            rpn_post_nms_top_n_test=50)
METHODS = {"det_kd": {}, "det_dkd": {}, "det_ckd": {}, "det_reviewkd": {}, "det_reviewkd_dkd": {},
           "det_compose": {"terms": [{"method": "det_reviewkd", "params": {"weight": 2.0}},
                                     {"method": "det_kd", "weight": 0.5}]}}
KD_TERMS = {"det_kd": {"kd"}, "det_dkd": {"dkd"}, "det_ckd": {"ckd"}, "det_reviewkd": {"reviewkd"},
            "det_reviewkd_dkd": {"reviewkd", "dkd"}, "det_compose": {"det_reviewkd.reviewkd", "det_kd.kd"}}
PAIRS = [("fasterrcnn_resnet101_fpn", "fasterrcnn_resnet18_fpn"),
         ("fasterrcnn_resnet101_fpn", "fasterrcnn_resnet50_fpn"),
         ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenetv2_fpn")]


@functools.cache
def _detector(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_detector(name, 4, **TINY)


def _batch() -> DetectionBatch:
    g = torch.Generator().manual_seed(0)
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[10.0, 2.0, 60.0, 30.0], [0.0, 30.0, 20.0, 63.0]]),
                "labels": torch.tensor([1, 3])}]
    return DetectionBatch([torch.rand(3, 64, 64, generator=g) for _ in range(2)], targets)


def _step(method: str, teacher: torch.nn.Module, student: torch.nn.Module, params: dict) -> dict[str, float]:
    """One optimizer step of ``method``; asserts the teacher got no gradient and did not change."""
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = kdlab.create_distiller(method, student=student, teacher=teacher, **params).train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    opt = torch.optim.SGD(list(d.trainable_parameters()), lr=0.01)
    _, terms = d(_batch())
    sum(terms.values()).backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics
    assert set(terms) == set(DET_TERMS) | KD_TERMS[method]
    return {k: float(v.detach()) for k, v in terms.items()}


def test_unrolled_student_forward_gives_torchvisions_own_losses():
    model = _detector("fasterrcnn_resnet18_fpn").train()
    torch.manual_seed(3)  # proposal sampling draws from the global generator
    ours = student_features(model, _batch()).losses
    torch.manual_seed(3)
    theirs = model(list(_batch().images), [dict(t) for t in _batch().targets])
    assert set(ours) == set(theirs) == set(DET_TERMS)
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])


def test_dkd_on_roi_logits_is_losses_dkd_with_the_teacher_on_the_students_proposals():
    student, teacher = _detector("fasterrcnn_resnet18_fpn"), _detector("fasterrcnn_resnet18_fpn", seed=1)
    seen: dict[str, list] = {"student_rois": [], "teacher_rois": [], "logits": []}
    hooks = [student.roi_heads.box_roi_pool.register_forward_hook(lambda m, a, o: seen["student_rois"].append(a[1])),
             teacher.roi_heads.box_roi_pool.register_forward_hook(lambda m, a, o: seen["teacher_rois"].append(a[1])),
             student.roi_heads.box_predictor.register_forward_hook(lambda m, a, o: seen["logits"].append(o[0])),
             teacher.roi_heads.box_predictor.register_forward_hook(lambda m, a, o: seen["logits"].append(o[0]))]
    try:
        d = kdlab.create_distiller("det_dkd", student=student, teacher=teacher, alpha=1.0, beta=0.25,
                                   temperature=2.0).train()
        batch = _batch()
        _, terms = d(batch)
    finally:
        for h in hooks:
            h.remove()
    (rois_s,), (rois_t,) = seen["student_rois"], seen["teacher_rois"]
    assert all(torch.equal(a, b) for a, b in zip(rois_s, rois_t))  # the teacher's head saw the student's proposals
    # the matched labels of those proposals, recomputed from the ground truth by torchvision's matcher
    images, targets = student.transform(list(batch.images), [dict(t) for t in batch.targets])
    _, labels = student.roi_heads.assign_targets_to_proposals(
        list(rois_s), [t["boxes"] for t in targets], [t["labels"] for t in targets])
    logit_s, logit_t = seen["logits"]
    expected = losses.dkd(logit_s, logit_t, torch.cat(labels), alpha=1.0, beta=0.25, temperature=2.0)
    torch.testing.assert_close(terms["dkd"], expected)
    assert (torch.cat(labels) > 0).any() and (torch.cat(labels) == 0).any()  # foreground and background ROIs


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_steps_with_finite_losses_and_leaves_the_teacher_alone(method):
    teacher, student = _detector("fasterrcnn_resnet18_fpn", 1), _detector("fasterrcnn_mobilenetv2_fpn")
    terms = _step(method, teacher, student, METHODS[method])
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values()), terms


def test_detection_methods_refuse_classifiers_and_compose_checks_its_parts():
    clf = kdlab.create_model("resnet8", num_classes=10)
    with pytest.raises(KdlabError, match="not a Faster R-CNN"):
        kdlab.create_distiller("det_dkd", student=clf, teacher=clf)
    det = _detector("fasterrcnn_resnet18_fpn")
    with pytest.raises(KdlabError, match="not a detection method"):
        kdlab.create_distiller("det_compose", student=det, teacher=det, terms=[{"method": "kd"}])
    with pytest.raises(KdlabError, match="counted once"):
        kdlab.create_distiller("det_compose", student=det, teacher=det,
                               terms=[{"method": "det_kd", "params": {"det_weight": 2.0}}])


def test_compose_counts_the_detector_losses_once_and_weights_the_parts():
    teacher, student = _detector("fasterrcnn_resnet18_fpn", 1), _detector("fasterrcnn_resnet18_fpn")
    batch = _batch()
    torch.manual_seed(5)
    _, alone = kdlab.create_distiller("det_kd", student=student, teacher=teacher, temperature=2.0).train()(batch)
    torch.manual_seed(5)
    comp = kdlab.create_distiller("det_compose", student=student, teacher=teacher, det_weight=0.5,
                                  terms=[{"method": "det_kd", "weight": 3.0, "params": {"temperature": 2.0}}])
    _, both = comp.train()(batch)
    assert set(both) == set(DET_TERMS) | {"det_kd.kd"}
    torch.testing.assert_close(both["det_kd.kd"], 3.0 * alone["kd"])
    torch.testing.assert_close(both["loss_classifier"], 0.5 * alone["loss_classifier"])


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def test_every_method_steps_on_the_three_published_pairs(pair):
    teacher, student = _detector(pair[0], 1), _detector(pair[1])
    for method, params in METHODS.items():
        terms = _step(method, teacher, student, params)
        assert all(torch.isfinite(torch.tensor(v)) for v in terms.values()), (method, terms)


def test_a_teacher_that_normalises_differently_is_refused():
    student = _detector("fasterrcnn_resnet18_fpn")
    teacher = create_detector("fasterrcnn_resnet18_fpn", 4, image_mean=[0.5, 0.5, 0.5], **TINY)
    with pytest.raises(KdlabError, match="normalise with different image_mean"):
        kdlab.create_distiller("det_dkd", student=student, teacher=teacher)
