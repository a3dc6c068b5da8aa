"""Cached teacher outputs and few-sample runs: one teacher call per cached image, the chosen view,
reuse from the run folder, the clear error for non-logit methods, and digits runs end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kdlab.experiment as experiment
from kdlab.config import load_config
from kdlab.data import TensorImageSet
from kdlab.data.augment import crop_flip
from kdlab.data.loader import build_loader, epoch_generator
from kdlab.data.teacher_cache import CACHE_EPOCH, CachedTeacherLoader, compute_teacher_logits
from kdlab.errors import KdlabError
from kdlab.methods.base import Distiller, Needs

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
LOGIT_METHODS = ["kd", "dkd", "nkd", "uskd", "wsld", "dist", "ckd", "comparative", "mixup", "mixup3", "cutmix"]


pytestmark = pytest.mark.usefixtures("no_fsync")


class Counting(nn.Module):
    """A tiny teacher that counts the images it is called on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 8 * 8, 6))
        self.seen = 0
        self.register_forward_hook(lambda m, i, o: setattr(m, "seen", m.seen + i[0].shape[0]))

    def forward(self, x):
        return self.net(x)


def _images(n=37):
    g = torch.Generator().manual_seed(2)
    return TensorImageSet(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 6)


def _normalize(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("view", ["augmented", "clean"])
def test_teacher_runs_once_per_image_on_the_chosen_view(view):
    images, teacher = _images(), Counting().train()
    logits = compute_teacher_logits(teacher, images, view=view, seed=5, batch_size=10, mean=MEAN, std=STD,
                                    crop_padding=2)
    assert teacher.seen == len(images) == logits.shape[0] and logits.dtype == torch.float32
    assert teacher.training  # eval mode while caching, its mode restored afterwards
    x = images.images
    if view == "augmented":  # one crop + flip per image, drawn from the (seed, CACHE_EPOCH) generator
        g = epoch_generator(5, CACHE_EPOCH)
        offsets = torch.randint(0, 5, (len(images), 2), generator=g)
        flips = torch.rand(len(images), generator=g) < 0.5
        x = crop_flip(x, offsets, flips, 2)
    with torch.no_grad():
        ref = teacher.eval()(_normalize(x))
    assert torch.allclose(logits, ref, atol=1e-5)
    again = compute_teacher_logits(teacher, images, view=view, seed=5, batch_size=16, mean=MEAN, std=STD,
                                   crop_padding=2)
    assert torch.allclose(again, logits, atol=1e-5)  # seeded: the same view every time
    if view == "augmented":
        clean = compute_teacher_logits(teacher, images, view="clean", mean=MEAN, std=STD, crop_padding=2)
        assert not torch.allclose(clean, logits, atol=1e-3)


def test_cached_loader_attaches_rows_by_index():
    images = _images()
    logits = torch.randn(len(images), 6)
    base = build_loader(images, batch_size=8, train=True, mean=MEAN, std=STD, with_index=True, seed=1)
    loader = CachedTeacherLoader(base, logits, keep_index=False)
    assert len(loader) == len(base) == 5
    loader.set_epoch(2, start_batch=3)
    batches = list(loader)
    assert len(batches) == 2 and all(b.index is None for b in batches)
    base.set_epoch(2, start_batch=3)
    for b, ref in zip(batches, base):
        assert torch.equal(b.extra["teacher_logits"], logits[ref.index])
    with pytest.raises(KdlabError, match="with_index"):
        CachedTeacherLoader(build_loader(images, batch_size=8, train=True, mean=MEAN, std=STD), logits)


class FeatureTeacherMethod(Distiller):
    needs = Needs.of(student={"logits"}, teacher={"logits", "stages"})


def test_methods_needing_more_than_logits_fail_in_one_line():
    cfg = load_config(None, ["data.cache_teacher=true", "teacher.name=resnet8"])
    with pytest.raises(KdlabError) as err:
        experiment.check_teacher_cache(cfg, FeatureTeacherMethod)
    assert "\n" not in str(err.value) and "teacher stages" in str(err.value)
    assert "data.cache_teacher=false" in str(err.value)
    cfg.data.cache_view = "blurred"
    with pytest.raises(KdlabError, match="cache_view"):
        experiment.check_teacher_cache(cfg, FeatureTeacherMethod)


# ---- few-sample runs on digits ------------------------------------------------------------------

COMMON = ["data.dataset=digits", "data.image_size=16", "data.crop_padding=2", "data.val_fraction=0.2",
          "data.batch_size=32", "data.eval_batch_size=256", "train.device=cpu", "train.amp=off",
          "train.progress=false", "train.tensorboard=false", "schedule.name=constant", "optim.lr=0.05"]


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("fewsample")
    cfg = load_config(None, COMMON + [f"out_dir={out}", "name=teacher", "student.name=resnet8",
                                      "method.name=ce", "schedule.epochs=3"])
    summary = experiment.run_experiment(cfg)
    return out, out / "teacher" / "checkpoints" / "best.pt", summary


def _student_cfg(out, ckpt, method, *extra):
    return load_config(None, COMMON + [f"out_dir={out}", f"name={method}", "student.name=resnet8",
                                       "teacher.name=resnet8", f"teacher.checkpoint={ckpt}",
                                       f"method.name={method}", "data.subset_size=300", *extra])


def _count_teacher_calls(monkeypatch, ckpt):
    seen = {"images": 0, "calls": 0}
    build = experiment.build_model

    def counted(name, num_classes, kwargs, checkpoint, weights=None):
        model = build(name, num_classes, kwargs, checkpoint, weights)
        if checkpoint == str(ckpt):
            def hook(m, i, o):
                seen["images"] += i[0].shape[0]
                seen["calls"] += 1
            model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(experiment, "build_model", counted)
    return seen


def test_few_sample_run_with_cache_calls_the_teacher_once_per_image(digits_teacher, monkeypatch):
    out, ckpt, teacher_summary = digits_teacher
    assert teacher_summary["val_top1"] > 30
    seen = _count_teacher_calls(monkeypatch, ckpt)
    cfg = _student_cfg(out, ckpt, "kd", "data.cache_teacher=true", "schedule.epochs=4",
                       "train.early_stop_patience=2", "train.plateau_lr_drops=1")
    exp = experiment.build_experiment(cfg)
    assert (len(exp.data.train), len(exp.data.val)) == (240, 60)  # subset 300, 80 / 20
    assert seen["images"] == 240
    batch = next(iter(exp.train_loader))
    assert batch.extra["teacher_logits"].shape == (32, 10) and batch.index is None
    summary = experiment.run_experiment(cfg)
    assert seen["images"] == 240  # the run loaded the saved logits; training never calls the teacher
    assert (out / "kd" / "teacher_logits.pt").is_file()
    assert summary["steps"] > 0 and summary["test_top1_at_best_val"] is not None
    assert summary["val_top1"] is not None and summary["epochs_run"] == 4


def test_cache_is_recomputed_when_the_view_changes(digits_teacher, monkeypatch):
    out, ckpt, _ = digits_teacher
    seen = _count_teacher_calls(monkeypatch, ckpt)
    experiment.build_experiment(_student_cfg(out, ckpt, "dkd", "data.cache_teacher=true"))
    experiment.build_experiment(_student_cfg(out, ckpt, "dkd", "data.cache_teacher=true"))
    assert seen["images"] == 240
    experiment.build_experiment(_student_cfg(out, ckpt, "dkd", "data.cache_teacher=true", "data.cache_view=clean"))
    assert seen["images"] == 480


@pytest.mark.parametrize("method", LOGIT_METHODS)
def test_every_logit_method_runs_few_sample_with_the_cache(digits_teacher, monkeypatch, method):
    out, ckpt, _ = digits_teacher
    seen = _count_teacher_calls(monkeypatch, ckpt)
    cfg = _student_cfg(out, ckpt, method, "data.cache_teacher=true", "schedule.epochs=1", "train.max_steps=3",
                       f"name=all-{method}")
    summary = experiment.run_experiment(cfg, overwrite=True)
    assert summary["steps"] == 3
    assert seen["images"] == (0 if method == "uskd" else 240)  # once per cached image, never in training


def test_comparative_few_sample_end_to_end(digits_teacher):
    out, ckpt, _ = digits_teacher
    cfg = _student_cfg(out, ckpt, "comparative", "data.cache_teacher=true", "schedule.epochs=6",
                       "method.params.pos_and_neg=2", "method.params.max_rel_samples=5000",
                       "train.early_stop_patience=3", "train.plateau_lr_drops=1")
    exp = experiment.build_experiment(cfg)
    assert len(exp.train_loader) == 8  # ⌈240 / 32⌉ steps per epoch, CompKD's simulated epoch
    batch = next(iter(exp.train_loader))
    assert batch.image.shape[0] == 64 and batch.extra["teacher_logits"].shape == (64, 10)
    summary = experiment.run_experiment(cfg)
    assert summary["val_top1"] is not None and summary["test_top1_at_best_val"] is not None


def test_a_compose_whose_parts_need_teacher_features_is_refused_before_caching(digits_teacher, monkeypatch):
    out, ckpt, _ = digits_teacher
    seen = _count_teacher_calls(monkeypatch, ckpt)
    cfg = _student_cfg(out, ckpt, "compose", "data.cache_teacher=true",
                       "method.params.terms=[{method: kd}, {method: fitnet}]", "name=compose-cached")
    with pytest.raises(KdlabError, match="needs teacher .*stages.*data.cache_teacher=false"):
        experiment.build_experiment(cfg)
    assert seen["images"] < 240 and not (out / "compose-cached" / "teacher_logits.pt").exists()  # shape probes only
    seen["images"] = 0
    cfg = _student_cfg(out, ckpt, "compose", "data.cache_teacher=true",
                       "method.params.terms=[{method: kd}, {method: dist}]", "name=compose-cached")
    experiment.build_experiment(cfg)  # logits-only parts may use the cache
    assert seen["images"] == 240


def test_train_teacher_mode_forces_the_teachers_mode_for_any_method(digits_teacher):
    out, ckpt, _ = digits_teacher
    exp = experiment.build_experiment(_student_cfg(out, ckpt, "nkd", "train.teacher_mode=train", "name=tm"))
    exp.distiller.train()
    assert exp.distiller.teacher.training and exp.distiller.teacher_mode == "train"
    exp.distiller.eval()
    assert not exp.distiller.teacher.training
    exp = experiment.build_experiment(_student_cfg(out, ckpt, "ofd", "train.teacher_mode=eval", "name=tm"))
    assert not exp.distiller.train().teacher.training  # OFD's own choice is train mode
    with pytest.raises(KdlabError, match="a teacher in train mode"):  # the cache holds eval-mode logits
        experiment.build_experiment(_student_cfg(out, ckpt, "kd", "train.teacher_mode=train",
                                                 "data.cache_teacher=true", "name=tm"))
    with pytest.raises(KdlabError, match="train.teacher_mode='frozen' is out of range"):
        _student_cfg(out, ckpt, "kd", "train.teacher_mode=frozen")
