"""A short real run of a shipped ImageNet recipe: model and pipeline unchanged (torchvision ResNet18,
RandomResizedCrop(224) + flip, Resize(256) + CenterCrop(224), worker decoding), epochs and data cut
down, on an ImageNet-layout folder of full-size JPEGs made from real Tiny-ImageNet photos."""

from __future__ import annotations

import json

import pytest
from pipeline_jpegs import imagenet_layout

from kdlab.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.shared]  # imagenet_layout skips without ../shared


def test_imagenet_ce_recipe_learns_on_a_small_real_folder(tmp_path, capsys):
    classes = 4
    root = imagenet_layout(tmp_path / "imagenet", classes=classes, train=100, val=15)  # 60: 27-47% by seed
    code = main(["train", "imagenet/ce/resnet18", f"data.root={root}", f"out_dir={tmp_path / 'runs'}",
                 "name=short", "schedule.epochs=6", "schedule.milestones=[5]", "data.batch_size=16",
                 "data.eval_batch_size=30", "data.num_workers=1", "data.val_fraction=0.1", "optim.lr=0.05",
                 "train.progress=false", "train.tensorboard=false", "train.seed=0"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    assert summary["test_images"] == classes * 15
    assert summary["test_top1_at_best_val"] > 100 / classes + 10, summary  # chance is 25%
