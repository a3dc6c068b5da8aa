"""The ``kdlab`` command end to end: train a teacher, distill, evaluate, list; and its error lines.

Runs on a small CIFAR-100 archive generated in torchvision's exact format, on scikit-learn's
digits, and (when ../shared is present) on a few hundred real Tiny-ImageNet images.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_data_cifar import write_cifar100

from kdlab.cli import main
from kdlab.engine.checkpoint import load_checkpoint_file


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def tiny_recipe(root: Path, out: Path) -> dict:
    return {
        "out_dir": str(out),
        "data": {"dataset": "cifar100", "root": str(root), "val_fraction": 0.2, "batch_size": 16,
                 "eval_batch_size": 64},
        "optim": {"lr": 0.05},
        "schedule": {"name": "cosine", "epochs": 2},
        "train": {"progress": False, "tensorboard": False, "seed": 1},
    }


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar100(root, per_class_train=5, per_class_test=2, classes=100)
    return root


def test_train_teacher_then_distill_then_eval_on_a_cifar100_archive(cifar_root, tmp_path, capsys):
    out = tmp_path / "runs"
    base = tiny_recipe(cifar_root, out)
    teacher_cfg = write_yaml(tmp_path / "teacher.yaml",
                             {**base, "name": "t", "student": {"name": "resnet14"}, "method": {"name": "ce"}})
    code, stdout, _ = run_cli(["train", str(teacher_cfg)], capsys)
    assert code == 0
    summary = json.loads(stdout[stdout.index("{"):])
    run = out / "t"
    assert {"config.yaml", "metrics.jsonl", "summary.json"} <= {p.name for p in run.iterdir()}
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert summary["splits"]["test_top1_at_best_val"].startswith("test split")
    assert summary["steps"] == 2 * 25  # 500 train images, 20% held out -> 400 / 16 per epoch

    kd_cfg = write_yaml(tmp_path / "kd.yaml", {
        **base, "name": "s", "student": {"name": "resnet8"},
        "teacher": {"name": "resnet14", "checkpoint": str(run / "checkpoints" / "best.pt")},
        "method": {"name": "dkd", "params": {"beta": 2.0, "warmup_epochs": 1}}})
    code, stdout, _ = run_cli(["train", str(kd_cfg), "schedule.epochs=1", "--name", "s1"], capsys)
    assert code == 0
    assert json.loads(stdout[stdout.index("{"):])["epochs_run"] == 1
    best = load_checkpoint_file(out / "s1" / "checkpoints" / "best.pt")
    assert not any(k.startswith("teacher.") for k in best["distiller"]), "teacher weights saved with student"

    code, stdout, _ = run_cli(["eval", str(out / "s1")], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["split"] == "test" and result["n"] == 200 and 0.0 <= result["top1"] <= 100.0
    # the same number as the run's own test score at the best checkpoint
    saved = json.loads((out / "s1" / "summary.json").read_text())
    assert result["top1"] == pytest.approx(saved["test_top1_at_best_val"], abs=1e-6)


def test_eval_a_foreign_checkpoint_file_by_overrides(cifar_root, tmp_path, capsys):
    model = __import__("kdlab").create_model("resnet8", num_classes=100)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "m.pth")
    code, stdout, _ = run_cli(["eval", str(tmp_path / "m.pth"), "student.name=resnet8", "data.dataset=cifar100",
                               f"data.root={cifar_root}", "--split", "val", "data.val_fraction=0.2"], capsys)
    assert code == 0
    assert json.loads(stdout)["n"] == 100


@pytest.mark.parametrize("args,expected", [
    (["student.name=resnet8x5"], "unknown model 'resnet8x5'; did you mean 'resnet8x4'"),
    (["method.name=dkdd"], "unknown method 'dkdd'; did you mean 'dkd'"),
    (["data.dataset=cifar1000"], "unknown dataset 'cifar1000'; did you mean 'cifar100'"),
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    (["method.params.temprature=2"], "has no hyper-parameter 'temprature'; did you mean 'method.params.temperature'"),
    (["data.root=/nonexistent/place"], "cifar-100-python"),
    (["schedule.epochs=many"], "schedule.epochs must be an integer"),
])
def test_bad_input_gives_one_error_line(cifar_root, tmp_path, capsys, args, expected):
    cfg = write_yaml(tmp_path / "c.yaml", {**tiny_recipe(cifar_root, tmp_path / "runs"), "name": "x",
                                           "student": {"name": "resnet8"}, "method": {"name": "kd"},
                                           "teacher": {"name": "resnet8", "checkpoint": str(tmp_path / "c.yaml")}})
    code, out, err = run_cli(["train", str(cfg), *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdlab: error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err


def test_checkpoint_of_another_architecture_lists_the_keys(cifar_root, tmp_path, capsys):
    other = __import__("kdlab").create_model("resnet14", num_classes=100)
    torch.save(other.state_dict(), tmp_path / "r14.pt")
    cfg = write_yaml(tmp_path / "c.yaml", {**tiny_recipe(cifar_root, tmp_path / "runs"), "name": "x",
                                           "student": {"name": "resnet8"}, "method": {"name": "kd"},
                                           "teacher": {"name": "resnet20", "checkpoint": str(tmp_path / "r14.pt")}})
    code, _, err = run_cli(["train", str(cfg)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "missing keys" in err and "layer1.2" in err  # resnet14 has 2 blocks per stage, resnet20 has 3


def test_missing_teacher_checkpoint_says_how_to_get_one(tmp_path, capsys):
    code, _, err = run_cli(["train", "cifar100/kd/resnet32x4_resnet8x4", f"out_dir={tmp_path}"], capsys)
    assert code == 2 and "train that model first" in err


def test_list_commands(capsys):
    for what, needle in [("models", "resnet32x4"), ("methods", "Decoupled KD"), ("datasets", "tiny-imagenet"),
                         ("configs", "cifar100/dkd/resnet32x4_resnet8x4")]:
        code, out, _ = run_cli(["list", what], capsys)
        assert code == 0 and needle in out
    code, out, _ = run_cli(["list", "models"], capsys)
    line = next(x for x in out.splitlines() if x.startswith("resnet32x4 "))
    assert "7.43M" in line


@pytest.mark.shared
def test_distill_on_a_few_hundred_real_tiny_imagenet_images(tmp_path, capsys):
    from shared_data import extracted, require

    require("tiny-imagenet-200-sub100.tar.gz")
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    data = {"dataset": "tiny-imagenet", "root": str(root), "limit_per_class": 30, "val_fraction": 0.2,
            "batch_size": 32, "image_size": 32}
    base = {"out_dir": str(tmp_path), "data": data, "schedule": {"name": "cosine", "epochs": 3},
            "train": {"progress": False, "tensorboard": False}}
    teacher = write_yaml(tmp_path / "t.yaml", {**base, "name": "t", "student": {"name": "resnet8"},
                                               "method": {"name": "ce"}})
    assert run_cli(["train", str(teacher)], capsys)[0] == 0
    kd = write_yaml(tmp_path / "kd.yaml", {
        **base, "name": "kd", "student": {"name": "resnet8"}, "method": {"name": "kd"},
        "teacher": {"name": "resnet8", "checkpoint": str(tmp_path / "t" / "checkpoints" / "best.pt")}})
    code, out, _ = run_cli(["train", str(kd)], capsys)
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    # 100 classes x 30 images, 20% held out: 2,400 training images; chance is 1%
    assert summary["steps"] == 3 * 75
    assert summary["val_top1"] > 3.0


# `kdlab train`, SIGKILLed by itself right after its first mid-epoch checkpoint: a fixed kill point,
# not a race between a polling test and a run whose speed depends on the machine's load
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
import kdlab.engine.run_folder as run_folder
from kdlab.cli import main
save = run_folder.save_checkpoint
def save_then_die(state, path, *args, **kwargs):
    out = save(state, path, *args, **kwargs)
    if os.path.basename(path) == "last.pt":
        os.kill(os.getpid(), signal.SIGKILL)
    return out
run_folder.save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_killed_cli_run_resumes_to_the_same_weights(cifar_root, tmp_path):
    """SIGKILL a real `kdlab train` process right after its first mid-epoch checkpoint; `--resume`
    must end with weights identical to an uninterrupted run (CPU, deterministic mode)."""
    base = tiny_recipe(cifar_root, tmp_path / "runs")
    base["train"].update({"deterministic": True, "checkpoint_every_steps": 5, "amp": "off"})
    base["schedule"]["epochs"] = 3
    cfg = write_yaml(tmp_path / "c.yaml", {**base, "student": {"name": "resnet8"}, "method": {"name": "ce"}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", str(cfg)]
    subprocess.run([sys.executable, "-m", "kdlab.cli", *args, "--name", "ref"], check=True, env=env,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT, *args, "--name", "cut"], env=env,
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    last = tmp_path / "runs" / "cut" / "checkpoints" / "last.pt"
    assert load_checkpoint_file(last)["global_step"] == 5  # killed mid-epoch 1 of 3 (25 steps each)
    subprocess.run([sys.executable, "-m", "kdlab.cli", *args, "--name", "cut", "--resume"], check=True, env=env,
                   capture_output=True)
    a = load_checkpoint_file(tmp_path / "runs" / "ref" / "checkpoints" / "last.pt")["distiller"]
    b = load_checkpoint_file(last)["distiller"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_train_prints_the_exact_resume_command(monkeypatch, capsys):
    import kdlab.experiment

    def interrupted(cfg, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(kdlab.experiment, "run_experiment", interrupted)
    code, _, err = run_cli(["train", "cifar100/kd/resnet32x4_resnet8x4", "data.root=my data", "optim.lr=0.01",
                            "--name", "run 1"], capsys)
    assert code == 130
    assert err.strip().endswith("continue with: kdlab train cifar100/kd/resnet32x4_resnet8x4 'data.root=my data' "
                                "optim.lr=0.01 --name 'run 1' --resume")
