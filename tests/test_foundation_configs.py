"""The shipped CIFAR-100 KD / DKD / teacher recipes, every one of the 11 standard pairs, against the
values of methods.md section 1.1 (KD), 1.2 (DKD per-pair beta, warm-up 20) and 2.7 (recipe).

Also the Tiny-ImageNet and CIFAR-10 teacher + KD + DKD recipes: each distillation recipe reads the
checkpoint its teacher recipe writes, on the same dataset.
"""

from __future__ import annotations

import pytest

from kdlab.config import list_configs, load_config

# (teacher, student) -> DKD beta, methods.md 1.2 (mdistiller configs/cifar100/dkd/*.yaml)
DKD_BETA = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
    ("resnet32x4", "resnet8x4"): 8.0,
    ("resnet32x4", "ShuffleV1"): 8.0,
    ("resnet32x4", "ShuffleV2"): 8.0,
    ("ResNet50", "MobileNetV2"): 8.0,
    ("wrn_40_2", "ShuffleV1"): 8.0,
}
LIGHT = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}  # lr 0.01 (methods.md 2.7)
PAIRS = sorted(DKD_BETA)


def _recipe_ok(cfg, lr: float) -> None:
    assert cfg.data.dataset == "cifar100" and cfg.data.batch_size == 64 and cfg.data.crop_padding == 4
    assert cfg.optim.name == "sgd" and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 5e-4
    assert cfg.optim.lr == lr
    assert cfg.schedule.name == "multistep" and cfg.schedule.epochs == 240
    assert cfg.schedule.milestones == [150, 180, 210] and cfg.schedule.gamma == 0.1
    assert cfg.schedule.warmup_epochs == 0


def _full_params(cfg) -> dict:
    from kdlab.methods import method_defaults

    return {**method_defaults(cfg.method.name), **cfg.method.params}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}_{p[1]}")
def test_dkd_recipe_of_each_standard_pair(pair):
    teacher, student = pair
    cfg = load_config(f"cifar100/dkd/{teacher}_{student}")
    assert (cfg.teacher.name, cfg.student.name, cfg.method.name) == (teacher, student, "dkd")
    assert _full_params(cfg) == {"alpha": 1.0, "beta": DKD_BETA[pair], "temperature": 4.0,
                                 "warmup_epochs": 20, "ce_weight": 1.0}
    _recipe_ok(cfg, 0.01 if student in LIGHT else 0.05)
    assert cfg.teacher.checkpoint == f"runs/cifar100-ce-{teacher}/checkpoints/best.pt"


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}_{p[1]}")
def test_kd_recipe_of_each_standard_pair(pair):
    teacher, student = pair
    cfg = load_config(f"cifar100/kd/{teacher}_{student}")
    assert (cfg.teacher.name, cfg.student.name, cfg.method.name) == (teacher, student, "kd")
    assert _full_params(cfg) == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    _recipe_ok(cfg, 0.01 if student in LIGHT else 0.05)


@pytest.mark.parametrize("model", sorted({m for p in PAIRS for m in p}))
def test_teacher_and_student_recipes(model):
    cfg = load_config(f"cifar100/ce/{model}")
    assert cfg.student.name == model and cfg.method.name == "ce" and not cfg.teacher.name
    assert cfg.name == f"cifar100-ce-{model}"
    _recipe_ok(cfg, 0.01 if model in LIGHT else 0.05)


@pytest.mark.parametrize("dataset", ["tiny-imagenet", "cifar10"])
def test_other_datasets_have_teacher_kd_and_dkd_chains(dataset):
    names = set(list_configs())
    chains = 0
    for method in ("kd", "dkd"):
        for name in sorted(n for n in names if n.startswith(f"{dataset}/{method}/")):
            cfg = load_config(name)
            assert cfg.data.dataset == dataset, name
            teacher_recipe = f"{dataset}/ce/{cfg.teacher.name}"
            assert teacher_recipe in names, f"{name}: no {teacher_recipe}"
            tcfg = load_config(teacher_recipe)
            assert cfg.teacher.checkpoint == f"runs/{tcfg.name}/checkpoints/best.pt", name
            assert tcfg.data.dataset == dataset
            if method == "dkd":
                pair = (cfg.teacher.name, cfg.student.name)
                if pair in DKD_BETA:  # the same per-pair beta as on CIFAR-100
                    assert _full_params(cfg)["beta"] == DKD_BETA[pair], name
            chains += 1
    assert chains >= 4
