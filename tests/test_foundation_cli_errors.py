"""Bad input through the ``kdlab`` command: each gives exit status 2 and ONE line on stderr, naming
what was wrong (closest valid names, the expected data layout, mismatching keys), no traceback.

Runs on scikit-learn's digits (no files), tiny models, CPU. Complements test_cli_e2e.py, which
covers the same kind of errors on a CIFAR-100 archive.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import kdlab
from kdlab.cli import main


@pytest.fixture
def digits_cfg(tmp_path) -> Path:
    cfg = {"name": "d", "out_dir": str(tmp_path / "runs"),
           "data": {"dataset": "digits", "root": str(tmp_path / "nowhere"), "val_fraction": 0.1,
                    "batch_size": 64, "image_size": 16, "crop_padding": 2},
           "student": {"name": "resnet8"}, "method": {"name": "ce"},
           "schedule": {"name": "constant", "epochs": 1},
           "train": {"device": "cpu", "progress": False, "tensorboard": False, "amp": "off"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_error_line(args: list[str], capsys) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdlab: error: "), err
    return lines[0]


@pytest.mark.parametrize("overrides,expected", [
    (["student.name=resnet8x5"], ["unknown model 'resnet8x5'", "'resnet8x4'"]),
    (["method.name=dkdd"], ["unknown method 'dkdd'", "'dkd'"]),
    (["data.dataset=digitz"], ["unknown dataset 'digitz'", "'digits'"]),
    (["optim.lrr=0.1"], ["unknown config key 'optim.lrr'", "'optim.lr'"]),
    (["data.batchsize=8"], ["unknown config key 'data.batchsize'", "'data.batch_size'"]),
    (["optim.lr=abc"], ["optim.lr must be a number", "'abc'"]),
    (["schedule.epochs=1.5"], ["schedule.epochs must be an integer"]),
    (["optimlr"], ["override 'optimlr' must look like key.sub=value"]),
    (["student.kwargs.shortcutt=A"], ["takes no argument 'shortcutt'", "'shortcut'"]),
    (["train.amp=fp16"], ["unknown train.amp value 'fp16'", "'bf16'"]),
    (["schedule.name=cosin"], ["unknown schedule 'cosin'", "'cosine'"]),
    (["method.name=kd"], ["needs a teacher"]),
    (["data.val_fraction=1.5"], ["data.val_fraction=1.5 is out of range: it must be in [0, 1)"]),
])
def test_config_errors(digits_cfg, capsys, overrides, expected):
    line = one_error_line(["train", str(digits_cfg), *overrides], capsys)
    for needle in expected:
        assert needle in line, line


@pytest.mark.parametrize("dataset,layout", [
    ("cifar10", "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}"),
    ("cifar100", "cifar-100-python/{train,test,meta}"),
    ("tiny-imagenet", "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"),
    ("imagefolder", "train/<class>/<images> and val/<class>/<images>"),
    ("cifar10-jpeg", "train/<class>/<images>"),
])
def test_missing_data_root_names_the_layout(digits_cfg, capsys, tmp_path, dataset, layout):
    line = one_error_line(["train", str(digits_cfg), f"data.dataset={dataset}"], capsys)
    assert str(tmp_path / "nowhere") in line and layout in line, line


@pytest.mark.parametrize("override,expected", [
    ("data.batch_size=0", "data.batch_size=0 is out of range: it must be >= 1"),
    ("data.eval_batch_size=-4", "data.eval_batch_size=-4 is out of range: it must be >= 1"),
    ("data.crop_padding=-1", "data.crop_padding=-1 is out of range: it must be >= 0"),
    ("optim.momentum=-1", "optim.momentum=-1.0 is out of range: it must be in [0, 1)"),
])
def test_bad_loader_values_are_one_line(digits_cfg, capsys, override, expected):
    assert expected in one_error_line(["train", str(digits_cfg), override], capsys)


def test_yaml_syntax_error_and_non_mapping(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("data: [digits, 1\nstudent: {name: resnet8}\n")
    assert "is not valid YAML" in one_error_line(["train", str(tmp_path / "bad.yaml")], capsys)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert "must be a mapping" in one_error_line(["train", str(tmp_path / "list.yaml")], capsys)
    assert "neither a file nor a shipped recipe" in one_error_line(["train", str(tmp_path / "no.yaml")], capsys)


def test_teacher_checkpoint_of_another_architecture(digits_cfg, tmp_path, capsys):
    torch.save({"model": kdlab.create_model("resnet14", num_classes=10).state_dict()}, tmp_path / "r14.pth")
    line = one_error_line(["train", str(digits_cfg), "method.name=kd", "teacher.name=resnet20",
                           f"teacher.checkpoint={tmp_path / 'r14.pth'}"], capsys)
    assert "r14.pth" in line and "missing keys (layer1.2." in line
    # a file that is no checkpoint at all
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    line = one_error_line(["train", str(digits_cfg), "method.name=kd", "teacher.name=resnet20",
                           f"teacher.checkpoint={tmp_path / 'junk.pth'}"], capsys)
    assert "junk.pth is unreadable or corrupt (Unsupported operand" in line


def test_eval_bad_targets(tmp_path, capsys):
    line = one_error_line(["eval", str(tmp_path / "nope.pt")], capsys)
    assert "nope.pt" in line and "neither a run folder nor a checkpoint file" in line
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    line = one_error_line(["eval", str(tmp_path / "junk.pt"), "student.name=resnet8", "data.dataset=digits"],
                          capsys)
    assert "junk.pt is unreadable or corrupt" in line
    assert "needs student.name" in one_error_line(["eval", str(tmp_path / "junk.pt")], capsys)
    assert "not a finished kdlab run" in one_error_line(["eval", str(tmp_path)], capsys)
    torch.save(kdlab.create_model("resnet14", num_classes=10).state_dict(), tmp_path / "r14.pt")
    line = one_error_line(["eval", str(tmp_path / "r14.pt"), "student.name=resnet8", "data.dataset=digits"],
                          capsys)
    assert "unexpected keys (layer1.1." in line


def test_nan_loss_names_the_step(digits_cfg, capsys, tmp_path):
    line = one_error_line(["train", str(digits_cfg), "optim.lr=1e30"], capsys)
    assert "training diverged: non-finite loss at epoch 1, step" in line
    assert "no checkpoint was written before it" in line


def test_demo_with_zero_epochs_is_refused(capsys):
    assert "--epochs must be >= 1, got 0" in one_error_line(["demo", "--epochs", "0"], capsys)
