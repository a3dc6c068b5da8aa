"""Shipped recipes run: every recipe builds its distiller on randomly initialised models (slow, ~90 s),
and the ViT recipes (ViTKD, USKD on a ViT) train a step from the CLI on digits resized to their size."""

from __future__ import annotations

import pytest
import torch

import kdlab
from kdlab.cli import main
from kdlab.config import list_configs, load_config
from kdlab.data import DATASETS
from kdlab.methods import method_class, method_defaults
from kdlab.methods.base import DATA_FACTS

pytestmark = pytest.mark.usefixtures("no_fsync")


def _num_classes(dataset: str) -> int:
    return {"cifar100": 100, "tiny-imagenet": 100, "cifar10": 10, "cifar10-jpeg": 10}[dataset]


@pytest.mark.slow
def test_every_shipped_recipe_builds_its_distiller():
    assert set(DATASETS.names()) >= {"cifar100", "tiny-imagenet", "cifar10", "cifar10-jpeg"}
    built = 0
    for name in list_configs():
        if name.split("/")[0] in ("imagenet", "places365", "coco", "tiny-imagenet-det"):  # own slow tests
            continue
        cfg = load_config(name)
        classes = _num_classes(cfg.data.dataset)
        size = cfg.data.image_size or (64 if cfg.data.dataset == "tiny-imagenet" else 32)
        student = kdlab.create_model(cfg.student.name, num_classes=classes, **cfg.student.kwargs)
        teacher = (kdlab.create_model(cfg.teacher.name, num_classes=classes, **cfg.teacher.kwargs)
                   if method_class(cfg.method.name).uses_teacher else None)
        facts = dict(zip(DATA_FACTS, (size, 500, classes, cfg.data.batch_size)))
        params = dict(cfg.method.params)
        params |= {k: v for k, v in facts.items() if k in method_defaults(cfg.method.name) and k not in params}
        kdlab.create_distiller(cfg.method.name, student=student, teacher=teacher, **params)
        built += 1
    assert built > 380


VIT_RECIPES = {
    "cifar100/vitkd/vit_small_patch4_32_vit_tiny_patch4_32": 32,
    "tiny-imagenet/vitkd/vit_small_patch4_64_vit_tiny_patch4_64": 64,
    "tiny-imagenet/uskd/vit_tiny_patch4_64": 64,
}


@pytest.mark.parametrize("recipe", list(VIT_RECIPES))
def test_vit_recipes_train_a_step_from_the_cli(recipe, tmp_path, capsys):
    size = VIT_RECIPES[recipe]
    cfg = load_config(recipe)
    args = ["train", recipe, "data.dataset=digits", f"data.image_size={size}", "data.crop_padding=4",
            "data.batch_size=16", "train.max_steps=2", "train.device=cpu", "train.progress=false",
            "train.tensorboard=false", f"out_dir={tmp_path}", "name=vit", "student.kwargs.depth=4"]
    if cfg.teacher.name:  # a random teacher of the recipe's architecture, 4 blocks to stay quick
        teacher = kdlab.create_model(cfg.teacher.name, num_classes=10, depth=4)
        torch.save({"model": teacher.state_dict()}, tmp_path / "teacher.pt")
        args += [f"teacher.checkpoint={tmp_path / 'teacher.pt'}", "teacher.kwargs.depth=4"]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = (tmp_path / "vit" / "summary.json").read_text()
    assert '"steps": 2' in summary and '"stopped_by": "max_steps"' in summary
