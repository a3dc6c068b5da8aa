"""``kdlab cost``: MACs match published numbers and hand counts, parameters and extras are the
models' own, the data's resolution comes without reading data, speed reports positive rates."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from kdlab.cli import main
from kdlab.config import load_config
from kdlab.models import create_model
from kdlab.workflow.cost import count_macs, data_facts, model_cost, speed


def test_macs_are_half_the_counted_flops_of_a_hand_counted_net():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    # conv: 8 out channels x 8x8 positions x (3 x 3 x 3) multiply-adds; linear: 512 x 10
    assert count_macs(net, torch.zeros(1, 3, 8, 8)) == 8 * 64 * 27 + 512 * 10


def test_resnet20_on_cifar_is_41m_macs():
    cost = model_cost(load_config(None, ["student.name=resnet20", "data.dataset=cifar100", "data.root=/nonexistent"]))
    assert cost["image_size"] == 32 and cost["num_classes"] == 100  # from the catalog table: no data read
    assert cost["student_macs"] == pytest.approx(41e6, rel=0.01)  # published: 41M (RepDistiller / CRD tables)
    assert cost["student_params"] == sum(p.numel() for p in create_model("resnet20", 100).parameters())
    assert cost["teacher"] is None and cost["extra_params"] == 0


def test_torchvision_resnet18_at_224_is_1_82g_macs():
    model = create_model("torchvision:resnet18", num_classes=1000).eval()
    with torch.no_grad():
        macs = count_macs(model, torch.zeros(1, 3, 224, 224))
    assert macs == pytest.approx(1.82e9, rel=0.005)  # torchvision's documented 1.81 GFLOPS (= MACs)
    cost = model_cost(load_config(None, ["student.name=torchvision:resnet18", "data.dataset=imagenet"]))
    assert cost["student_macs"] == macs and cost["image_size"] == 224


def test_teacher_and_method_extras(memoised_probes):
    cfg = load_config(None, ["student.name=resnet8", "teacher.name=resnet14", "method.name=fitnet",
                             "data.dataset=cifar10", "data.image_size=16"])
    cost = model_cost(cfg)
    x = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        assert cost["teacher_macs"] == count_macs(create_model("resnet14", 10).eval(), x)
        assert cost["student_macs"] == count_macs(create_model("resnet8", 10).eval(), x)
    assert cost["teacher_params"] == sum(p.numel() for p in create_model("resnet14", 10).parameters())
    assert cost["extra_params"] > 0 and cost["extra_macs"] > 0  # FitNet's regressor
    assert cost["image_size"] == 16  # data.image_size wins over the native 32


def test_data_facts_follow_caps_and_val_split():
    cfg = load_config(None, ["data.dataset=cifar100", "data.subset_size=1000", "data.val_fraction=0.2"])
    assert data_facts(cfg) == {"num_classes": 100, "image_size": 32, "num_data": 800}


def test_speed_reports_rates_and_what_memory_means():
    cfg = load_config(None, ["student.name=resnet8", "data.dataset=digits", "data.image_size=16",
                             "data.batch_size=8", "data.eval_batch_size=8"])
    s = speed(cfg, "cpu", steps=1, warmup=1)
    assert s["train_img_per_s"] > 0 and s["infer_img_per_s"] > 0 and s["peak_memory_mb"] > 0
    assert s["device"] == "cpu" and "RSS" in s["peak_memory_kind"]


def test_cli_cost_json(capsys):
    code = main(["cost", "--no-speed", "--json", "cifar100/kd/resnet32x4_resnet8x4"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["student"] == "resnet8x4" and out["teacher"] == "resnet32x4"
    assert out["teacher_macs"] == pytest.approx(1.08e9, rel=0.01)  # resnet32x4: 1.08G in the CRD/DKD tables


def test_cli_cost_bad_config_is_one_line(capsys):
    assert main(["cost", "cifar100/kd/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdlab: error: config 'cifar100/kd/nope'") and err.count("\n") == 1


@pytest.mark.shared
def test_tiny_imagenet_classes_come_from_its_wnids_without_decoding():
    from shared_data import extracted

    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    cfg = load_config(None, ["data.dataset=tiny-imagenet", f"data.root={root}", "student.name=resnet8"])
    assert data_facts(cfg) == {"num_classes": 100, "image_size": 64, "num_data": 45000}  # 100 x 500, 10% val
    assert model_cost(cfg)["num_classes"] == 100


def test_bench_cost_columns_of_a_shipped_recipe():
    from kdlab.config import resolve_config_path
    from kdlab.workflow.cost import bench_columns

    cols = bench_columns(resolve_config_path("cifar100/kd/resnet32x4_resnet8x4"))
    # resnet8x4 on CIFAR-100: 1.23M parameters (methods.md section 3), 0.18G MACs (mdistiller); KD adds none
    assert cols["params"] == "1.23M" and cols["MACs"] == "177.07M"
    assert cols["extra params"] == "0"
