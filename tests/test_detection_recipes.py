"""The shipped detection recipes: consistent names and hyper-parameters, mdistiller's schedule, published AP."""

from __future__ import annotations

import pytest

from kdlab.config import list_configs, load_config
from kdlab.data.coco_catalog import is_detection_dataset
from kdlab.methods import _checked_value, method_class, method_defaults
from kdlab.models.detection import check_detector_name

DET = [n for n in list_configs() if n.split("/")[0] in ("coco", "tiny-imagenet-det")]
PAIRS = ("r101_r18", "r101_r50", "r50_mv2")


def test_every_detection_recipe_names_detectors_a_detection_method_and_valid_parameters():
    assert len(DET) >= 25
    configs = {n: load_config(n) for n in DET}
    produced = {f"runs/{c.name}/checkpoints/best.pt": c.student.name for c in configs.values()
                if c.method.name == "det_plain"}
    for name, cfg in configs.items():
        cls = method_class(cfg.method.name)
        assert cls.task == "detection" and is_detection_dataset(cfg.data.dataset), name
        assert name.split("/")[1] == cfg.method.name, name
        check_detector_name(cfg.student.name)
        defaults = method_defaults(cfg.method.name)
        for key, value in cfg.method.params.items():
            _checked_value(cfg.method.name, key, value, defaults[key])
        if cls.uses_teacher:
            check_detector_name(cfg.teacher.name)
            assert produced.get(cfg.teacher.checkpoint) == cfg.teacher.name, f"{name}: nothing trains its teacher"


@pytest.mark.parametrize("pair", PAIRS)
def test_coco_recipes_carry_mdistillers_schedule_and_the_dkd_papers_ap(pair):
    for method in ("det_kd", "det_dkd", "det_reviewkd", "det_reviewkd_dkd", "det_ckd"):
        cfg = load_config(f"coco/{method}/{pair}")
        assert (cfg.data.batch_size, cfg.optim.lr, cfg.train.max_steps) == (8, 0.01, 180000)
        assert cfg.schedule.milestones == [8, 11] and cfg.data.dataset == "coco"
        if method != "det_ckd":  # the CKD paper's COCO setting is not in its released code
            (pub,) = cfg.published
            assert pub.metric == "AP" and pub.split == "test" and 25 < pub.value < 45  # test = val2017
    dkd = load_config(f"coco/det_dkd/{pair}").method.params
    assert (dkd["alpha"], dkd["beta"], dkd["temperature"]) == (1.0, 0.25, 1.0)
    weight = load_config(f"coco/det_reviewkd/{pair}").method.params["weight"]
    assert weight == {"r101_r18": 1.2, "r101_r50": 1.0, "r50_mv2": 2.0}[pair]  # mdistiller's LOSS_WEIGHT
    assert load_config("coco/det_reviewkd_dkd/r101_r18").published[0].value == 37.01
