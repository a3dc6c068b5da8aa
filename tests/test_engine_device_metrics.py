"""Device/AMP/channels_last policy, seeding, top-k counts, evaluation and the run logger."""

import json
import random
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import TrainConfig
from kdlab.data.batch import Batch
from kdlab.engine.device import (
    DevicePolicy,
    build_policy,
    resolve_amp,
    resolve_channels_last,
    resolve_device,
    seed_everything,
)
from kdlab.engine.logging import RunLogger
from kdlab.engine.metrics import evaluate, topk_correct
from kdlab.errors import KdlabError

CPU = torch.device("cpu")


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def test_amp_policy(monkeypatch):
    for amx, want in ((True, torch.bfloat16), (False, None)):  # auto: bf16 on a CPU only with AMX
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert resolve_amp("auto", CPU) == want
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the probe: fp32
    assert resolve_amp("auto", CPU) is None
    assert resolve_amp("bf16", CPU) == torch.bfloat16
    assert resolve_amp("off", CPU) is None
    with pytest.raises(KdlabError, match="train.amp"):
        resolve_amp("fp8", CPU)


def test_channels_last_policy():
    assert resolve_channels_last("auto", conv_net()) is True
    assert resolve_channels_last("auto", nn.Linear(3, 3)) is False
    assert resolve_channels_last("on", nn.Linear(3, 3)) is True
    assert resolve_channels_last("off", conv_net()) is False
    with pytest.raises(KdlabError):
        resolve_channels_last("sometimes", conv_net())


def test_device_resolution_and_policy():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        with pytest.raises(KdlabError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(KdlabError):
        resolve_device("toaster")
    pol = build_policy(TrainConfig(device="cpu", amp="off", channels_last="on"), conv_net())
    assert pol == DevicePolicy(CPU, None, True)
    x = pol.prepare_images(torch.randn(2, 3, 4, 4))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pol.autocast():
        assert not torch.is_autocast_enabled("cpu")
    with DevicePolicy(CPU, torch.bfloat16).autocast():
        assert conv_net()(torch.randn(2, 3, 4, 4)).dtype == torch.bfloat16


def test_seed_everything_repeats_all_generators():
    det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(7, deterministic=True)
    a = draw()
    assert torch.are_deterministic_algorithms_enabled()
    seed_everything(7)
    assert draw() == a
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(det[0], warn_only=det[1])


def test_topk_correct_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.2, 0.3, 0.4],   # ranks: 1, 5, 4, 3, 0, 2
                           [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],   # ranks: 0, 5, 4, 3, 2, 1
                           [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # ranks: 5, 4, 3, 2, 1, 0
    target = torch.tensor([1, 2, 0])
    # sample 0: top-1 hit; sample 1: class 2 is 5th -> top-5 hit; sample 2: class 0 is last -> miss
    assert topk_correct(logits, target, (1, 5)).tolist() == [1, 2]
    assert topk_correct(logits, target, (1, 2, 6)).tolist() == [1, 1, 3]
    # fewer than 5 classes: top-5 becomes top-C, always a hit
    assert topk_correct(logits[:, :3], torch.tensor([1, 2, 1]), (1, 5)).tolist() == [1, 3]


def test_evaluate_matches_a_manual_pass_and_restores_mode():
    torch.manual_seed(0)
    model = conv_net().train()
    data = [Batch(torch.randn(5, 3, 6, 6), torch.randint(0, 3, (5,))) for _ in range(3)]
    out = evaluate(model, data, device="cpu")
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(b.image) for b in data])
    target = torch.cat([b.target for b in data])
    assert out["n"] == 15
    assert out["top1"] == pytest.approx(100.0 * (logits.argmax(1) == target).float().mean().item())
    assert out["top5"] == pytest.approx(100.0)  # 3 classes: top-5 = top-3
    assert out["loss"] == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)
    # tuples work too, and bf16/channels_last run through
    pol = DevicePolicy(CPU, torch.bfloat16, True)
    out2 = evaluate(model, [(b.image, b.target) for b in data], policy=pol)
    assert out2["n"] == 15
    with pytest.raises(KdlabError, match="no samples"):
        evaluate(model, [], device="cpu")


def test_run_logger_writes_jsonl_and_summary(tmp_path, capsys):
    log = RunLogger(tmp_path, tensorboard=False, progress=True)  # not a TTY under pytest: plain lines
    log.log_train(epoch=1, step=10, lr=0.1, terms={"ce": 1.5, "kd": 0.5, "loss": 9.0}, loss=2.0, top1=12.5,
                  img_per_s=100.0)
    log.log_eval("val", epoch=1, step=10, metrics={"top1": 50.0, "top5": 90.0, "loss": 1.0, "n": 8})
    log.end_epoch("epoch 1/1 | step 10")
    log.write_summary({"name": "x", "val_top1": float("nan")})
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "train" and lines[0]["ce"] == 1.5 and lines[0]["lr"] == 0.1
    assert lines[0]["loss"] == 2.0 and lines[0]["term_loss"] == 9.0  # a clashing term name is prefixed
    assert lines[1] == {**lines[1], "event": "eval", "split": "val", "top1": 50.0, "top5": 90.0, "loss": 1.0}
    assert json.loads((tmp_path / "summary.json").read_text()) == {"name": "x", "val_top1": "nan"}
    assert "epoch 1/1 | step 10" in capsys.readouterr().out


def test_run_logger_without_tensorboard_warns_once_and_continues(tmp_path, monkeypatch):
    import kdlab.engine.logging as lg

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(lg, "_TB_WARNED", False)
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        log = RunLogger(tmp_path, tensorboard=True, progress=False)
    log.log_eval("test", epoch=1, step=1, metrics={"top1": 1.0})
    log.close()
    assert not (tmp_path / "tb").exists()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
