"""The Trainer end to end on a tiny conv net and a fake loader: exact resume, NaN, teacher, run folder.

Everything here is CPU-only and takes a few seconds. The fake loader follows the loader contract:
``len()`` batches, ``set_epoch(epoch, start_batch)`` makes the epoch's order and augmentation a
function of (seed, epoch) only and skips the first ``start_batch`` batches.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import Config, OptimConfig, ScheduleConfig, TrainConfig
from kdlab.data.batch import Batch
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.trainer import Trainer, TrainingDiverged
from kdlab.errors import KdlabError
from kdlab.methods.base import Distiller, Needs

NUM_CLASSES = 5


pytestmark = pytest.mark.usefixtures("no_fsync")


class FakeLoader:
    """Random images with learnable labels; order and flips depend only on (seed, epoch)."""

    def __init__(self, n_batches: int = 5, batch_size: int = 8, seed: int = 0, train: bool = True) -> None:
        g = torch.Generator().manual_seed(1000 + seed)
        n = n_batches * batch_size
        self.images = torch.randn(n, 3, 8, 8, generator=g)
        proj = torch.randn(3, NUM_CLASSES, generator=g)
        self.targets = (self.images.mean(dim=(2, 3)) @ proj).argmax(dim=1)
        self.n_batches, self.batch_size, self.seed, self.train = n_batches, batch_size, seed, train
        self.epoch, self.start = 1, 0
        self.set_epoch_calls: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.n_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch
        self.set_epoch_calls.append((epoch, start_batch))

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        n = len(self.targets)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        flip = torch.rand(n, generator=g) < 0.5 if self.train else torch.zeros(n, dtype=torch.bool)
        start, self.start = self.start, 0
        for b in range(start, self.n_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            img = self.images[idx].clone()
            img[flip[idx]] = img[flip[idx]].flip(-1)
            yield Batch(img, self.targets[idx], index=idx)


def tiny_net(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(dropout), nn.Linear(8, NUM_CLASSES))


class CE(Distiller):
    """Cross-entropy plus a tiny term drawn from python's and numpy's RNGs (to test their resume)."""

    needs = Needs.of(student={"logits"}, teacher=set())
    uses_teacher = False

    def __init__(self, student, teacher=None, *, fail_at_step=None, nan_at_step=None, on_step=None):
        super().__init__(student, teacher)
        self.fail_at_step, self.nan_at_step, self.on_step = fail_at_step, nan_at_step, on_step
        self.seen: list[tuple[int, int]] = []

    def losses(self, s, t, batch):
        self.seen.append((batch.epoch, batch.step))
        if self.on_step is not None:
            self.on_step(batch)
        if batch.step == self.fail_at_step:
            raise RuntimeError(f"injected failure at step {batch.step}")
        ce = F.cross_entropy(s.logits, batch.target)
        jitter = 1e-3 * (random.random() + float(np.random.rand()))
        terms = {"ce": ce, "jitter": jitter * ce}  # its gradient depends on the python/numpy draws
        if batch.step == self.nan_at_step:
            terms["ce"] = ce * float("nan")
        return terms


class KDWithTeacher(Distiller):
    """CE + KL to a teacher; records whether the teacher was in eval mode at each step."""

    needs = Needs.of(student={"logits"}, teacher={"logits"})

    def __init__(self, student, teacher, fail_at_step=None):
        super().__init__(student, teacher)
        self.teacher_modes: list[bool] = []
        self.fail_at_step = fail_at_step

    def losses(self, s, t, batch):
        self.teacher_modes.append(self.teacher.training)
        if batch.step == self.fail_at_step:
            raise RuntimeError(f"injected failure at step {batch.step}")
        kd = F.kl_div(F.log_softmax(s.logits, 1), F.softmax(t.logits, 1), reduction="batchmean")
        return {"ce": F.cross_entropy(s.logits, batch.target), "kd": kd}


def make_cfg(**train) -> Config:
    t = dict(seed=3, device="cpu", amp="off", channels_last="auto", deterministic=True, progress=False,
             tensorboard=False, checkpoint_every_steps=0)
    t.update(train)
    return Config(name="tiny",
                  optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                                    grad_clip=5.0),
                  schedule=ScheduleConfig(name="multistep", epochs=3, milestones=[2], gamma=0.1,
                                          warmup_epochs=1),
                  train=TrainConfig(**t))


def run(tmp_path, name, cfg, distiller=None, *, val=True, test=True, resume=False, **kw):
    distiller = distiller if distiller is not None else CE(tiny_net())
    val_loader = FakeLoader(3, seed=1, train=False) if val else None
    test_loader = FakeLoader(3, seed=2, train=False) if test else None
    trainer = Trainer(cfg, distiller, FakeLoader(), val_loader, test_loader, run_dir=tmp_path / name,
                      resume=resume, **kw)
    return trainer, trainer.fit()


def weights(distiller) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in distiller.state_dict_without_teacher().items()}


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, amp):
    cfg = make_cfg(amp=amp, checkpoint_every_steps=2)
    ref_trainer, ref_summary = run(tmp_path, "ref", cfg)
    ref = weights(ref_trainer.distiller)
    assert ref_summary["steps"] == 15

    # 5 steps/epoch: last.pt is written after step 8 (epoch 2, 3 batches done); step 9 then fails
    broken = CE(tiny_net(), fail_at_step=9)
    with pytest.raises(RuntimeError, match="injected failure at step 9"):
        run(tmp_path, "cut", cfg, broken)
    ck = load_checkpoint_file(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["batch_in_epoch"], ck["global_step"]) == (2, 3, 8)

    resumed = CE(tiny_net(seed=123))  # different init: everything must come from the checkpoint
    trainer, summary = run(tmp_path, "cut", cfg, resumed, resume=True)
    assert trainer.train_loader.set_epoch_calls == [(2, 3), (3, 0)]
    assert resumed.seen[0] == (2, 8) and resumed.seen[-1] == (3, 14)
    assert_identical(weights(resumed), ref)
    assert summary["steps"] == 15 and summary["best_epoch"] == ref_summary["best_epoch"]
    assert summary["val_top1"] == ref_summary["val_top1"]
    assert summary["test_top1_last"] == ref_summary["test_top1_last"]
    ref_opt = ref_trainer.optimizer.state_dict()["state"]
    res_opt = trainer.optimizer.state_dict()["state"]
    for i in ref_opt:
        assert torch.equal(ref_opt[i]["momentum_buffer"], res_opt[i]["momentum_buffer"])
    info = [e["message"] for e in events(tmp_path / "cut") if e["event"] == "info"]
    assert any("resume: continuing from" in m and "epoch 2, batch 3/5, step 8" in m for m in info)


class TrainModeTeacherKD(KDWithTeacher):
    """A teacher kept in train mode: its BN statistics move during training (OFD-like)."""

    teacher_mode = "train"


def test_resume_is_exact_with_a_train_mode_teacher(tmp_path):
    cfg = make_cfg(checkpoint_every_steps=3)

    def make(fail=None):
        return TrainModeTeacherKD(tiny_net(), tiny_net(seed=9, dropout=0.0), fail_at_step=fail)

    ref_trainer, _ = run(tmp_path, "ref", cfg, make(), test=False)
    with pytest.raises(RuntimeError):
        run(tmp_path, "cut", cfg, make(fail=7), test=False)
    resumed = make()
    run(tmp_path, "cut", cfg, resumed, test=False, resume=True)
    ref = ref_trainer.distiller
    assert resumed.teacher_modes[0] is True
    assert_identical(weights(resumed), weights(ref))
    assert_identical(dict(resumed.teacher.named_buffers()), dict(ref.teacher.named_buffers()))
    assert_identical(dict(resumed.teacher.named_parameters()), dict(ref.teacher.named_parameters()))


def test_nan_loss_raises_training_diverged_and_keeps_last_checkpoint(tmp_path):
    cfg = make_cfg(checkpoint_every_steps=2)
    last = tmp_path / "nan" / "checkpoints" / "last.pt"
    snapshot = {}

    def remember(batch):
        if batch.step == 7:
            snapshot["bytes"] = last.read_bytes()

    with pytest.raises(TrainingDiverged) as err:
        run(tmp_path, "nan", cfg, CE(tiny_net(), nan_at_step=7, on_step=remember))
    msg = str(err.value)
    assert "\n" not in msg
    assert "epoch 2, step 7" in msg and "ce=nan" in msg and str(last) in msg
    assert err.value.step == 7 and err.value.checkpoint == last
    assert last.read_bytes() == snapshot["bytes"]  # nothing was saved after the NaN
    ck = load_checkpoint_file(last)
    assert ck["global_step"] == 6
    assert all(torch.isfinite(v).all() for v in ck["distiller"].values() if v.is_floating_point())
    assert events(tmp_path / "nan")[-1]["event"] == "error"
    # the intact checkpoint resumes
    _, summary = run(tmp_path, "nan", cfg, CE(tiny_net()), resume=True)
    assert summary["steps"] == 15


def test_teacher_gets_no_grad_and_is_not_optimized(tmp_path):
    teacher = tiny_net(seed=9, dropout=0.0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = KDWithTeacher(tiny_net(), teacher)
    trainer, _ = run(tmp_path, "kd", make_cfg(max_steps=6), distiller)
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in optimized for p in teacher.parameters())
    assert optimized == {id(p) for p in distiller.student.parameters()}
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert_identical(teacher.state_dict(), before)  # BN running stats untouched too (eval mode)
    assert distiller.teacher_modes and not any(distiller.teacher_modes)
    ck = load_checkpoint_file(tmp_path / "kd" / "checkpoints" / "last.pt")
    assert not any(k.startswith("teacher.") for k in ck["distiller"])


def test_run_folder_contents_and_summary(tmp_path):
    trainer, summary = run(tmp_path, "full", make_cfg(tensorboard=True))
    d = tmp_path / "full"
    assert {p.name for p in d.iterdir()} == {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints",
                                             "tb"}
    assert {p.name for p in (d / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    assert any((d / "tb").iterdir())
    assert "name: tiny" in (d / "config.yaml").read_text()
    assert json.loads((d / "summary.json").read_text()) == summary
    assert {"name", "best_epoch", "val_top1", "test_top1_at_best_val", "test_top1_last", "epochs_run",
            "steps", "wall_s", "img_per_s", "splits"} <= summary.keys()
    assert summary["epochs_run"] == 3 and summary["steps"] == 15 and summary["img_per_s"] > 0
    ev = events(d)
    train = [e for e in ev if e["event"] == "train"]
    assert [e["epoch"] for e in train] == [1, 2, 3]
    assert {"epoch", "step", "lr", "ce", "jitter", "loss", "top1", "img_per_s"} <= train[0].keys()
    assert train[1]["lr"] == pytest.approx(0.1) and train[2]["lr"] == pytest.approx(0.01)
    splits = [(e["split"], e.get("weights")) for e in ev if e["event"] == "eval"]
    assert splits[:3] == [("val", None)] * 3 and ("test", "last") in splits
    best = load_checkpoint_file(d / "checkpoints" / "best.pt")
    assert {"student", "distiller", "epoch", "val_top1", "config"} <= best.keys()
    assert best["epoch"] == summary["best_epoch"] and best["val_top1"] == summary["val_top1"]
    assert best["student"].keys() == trainer.distiller.student.state_dict().keys()
    assert best["config"]["name"] == "tiny"


class ScriptedVal(FakeLoader):
    """A val loader whose labels agree with the model only at its 2nd evaluation (-> best epoch 2)."""

    def __init__(self, model_ref: list) -> None:
        super().__init__(2, seed=1, train=False)
        self.model_ref, self.calls = model_ref, 0

    def __iter__(self):
        self.calls += 1
        model = self.model_ref[0]
        for b in super().__iter__():
            preds = model(b.image).argmax(1)
            b.target = preds if self.calls == 2 else (preds + 1) % NUM_CLASSES
            yield b


def test_best_checkpoint_is_chosen_by_val(tmp_path):
    cfg = make_cfg()
    cfg.schedule = ScheduleConfig(name="constant", epochs=3)
    distiller = CE(tiny_net())
    ref = [distiller.student]
    trainer = Trainer(cfg, distiller, FakeLoader(), ScriptedVal(ref), FakeLoader(3, seed=2, train=False),
                      run_dir=tmp_path / "best")
    summary = trainer.fit()
    assert summary["best_epoch"] == 2 and summary["val_top1"] == 100.0
    assert summary["val_top1_last"] == 0.0
    best = load_checkpoint_file(tmp_path / "best" / "checkpoints" / "best.pt")
    assert best["epoch"] == 2
    # the best weights are the epoch-2 weights: a 2-epoch run with the same seed ends there
    cfg2 = make_cfg()
    cfg2.schedule = ScheduleConfig(name="constant", epochs=2)
    short, _ = run(tmp_path, "short", cfg2, test=False)
    assert_identical(best["distiller"], weights(short.distiller))
    # after fit the distiller holds the last weights, not the best ones
    last = load_checkpoint_file(tmp_path / "best" / "checkpoints" / "last.pt")
    assert_identical(weights(distiller), last["distiller"])
    tests = {e["weights"]: e for e in events(tmp_path / "best")
             if e["event"] == "eval" and e["split"] == "test"}
    assert tests["best"]["epoch"] == 2 and tests["last"]["epoch"] == 3
    assert summary["test_top1_at_best_val"] == tests["best"]["top1"]


def test_no_val_loader_means_best_is_last(tmp_path):
    trainer, summary = run(tmp_path, "noval", make_cfg(), val=False)
    assert summary["val_top1"] is None and summary["best_epoch"] == 3
    assert "best = last" in summary["splits"]["best_epoch"]
    assert summary["test_top1_at_best_val"] == summary["test_top1_last"]
    best = load_checkpoint_file(tmp_path / "noval" / "checkpoints" / "best.pt")
    assert_identical(best["distiller"], weights(trainer.distiller))


def test_max_steps_resume_without_checkpoint_and_existing_run(tmp_path):
    cfg = make_cfg(max_steps=7)
    with pytest.raises(KdlabError, match="--resume: no checkpoint .* nothing was changed.*--overwrite"):
        run(tmp_path, "smoke", cfg, test=False, resume=True)  # nothing to resume: refused
    assert not (tmp_path / "smoke" / "metrics.jsonl").exists()
    trainer, summary = run(tmp_path, "smoke", cfg, test=False)
    assert summary["steps"] == 7 and summary["stopped_by"] == "max_steps" and summary["epochs_run"] == 2
    ck = load_checkpoint_file(tmp_path / "smoke" / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["batch_in_epoch"], ck["global_step"]) == (2, 2, 7)
    with pytest.raises(KdlabError, match="already holds a run"):
        run(tmp_path, "smoke", cfg)
    _, again = run(tmp_path, "smoke", cfg, test=False, overwrite=True)
    assert again["steps"] == 7
    # resuming with a larger budget continues from step 7 to the end
    _, rest = run(tmp_path, "smoke", make_cfg(), test=False, resume=True)
    assert rest["steps"] == 15 and rest["stopped_by"] == "epochs"


def test_channels_last_and_bf16_are_applied(tmp_path):
    seen = {}

    def look(batch):
        seen.setdefault("cl", batch.image.is_contiguous(memory_format=torch.channels_last))
        seen.setdefault("autocast", torch.is_autocast_enabled("cpu"))

    distiller = CE(tiny_net(), on_step=look)
    cfg = make_cfg(amp="bf16", channels_last="on", max_steps=2)
    run(tmp_path, "cl", cfg, distiller, val=False, test=False)
    assert seen == {"cl": True, "autocast": True}
    assert distiller.student[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_a_loader_shorter_than_its_len_is_an_error(tmp_path):
    class Short(FakeLoader):
        def __len__(self) -> int:
            return self.n_batches + 1

    trainer = Trainer(make_cfg(), CE(tiny_net()), Short(), None, run_dir=tmp_path / "short")
    with pytest.raises(KdlabError, match="stopped after 5 of its len\\(\\)=6 batches"):
        trainer.fit()


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    _, summary = run(tmp_path, "tty", make_cfg(progress=True, max_steps=12), val=False, test=False)
    assert summary["steps"] == 12
    assert "epoch 3/3" in capsys.readouterr().out


@pytest.mark.slow
def test_compile_keeps_state_dict_keys(tmp_path):
    distiller = KDWithTeacher(tiny_net(), tiny_net(seed=9, dropout=0.0))
    keys = set(distiller.state_dict_without_teacher())
    cfg = make_cfg(compile=True, deterministic=False, max_steps=3)
    _, summary = run(tmp_path, "compiled", cfg, distiller, test=False)
    assert summary["steps"] == 3
    assert set(distiller.state_dict_without_teacher()) == keys
    best = load_checkpoint_file(tmp_path / "compiled" / "checkpoints" / "best.pt")
    assert set(best["student"]) == set(tiny_net().state_dict())
