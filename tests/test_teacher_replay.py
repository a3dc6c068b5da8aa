"""Replay teacher cache (data.cache_view=replay): rebuilt top-k logits checked by hand, replayed crops
pixel-equal to the online epochs (tensor and JPEG file sets), KD with a full cache equal to online KD,
no teacher call while training, fingerprint reuse, one-line refusals and an exact mid-run resume.
The two-process build (torchrun, gloo) is marked slow."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import kdlab.experiment as experiment
from kdlab.config import load_config
from kdlab.data import FileImageSet, TensorImageSet, build_loader
from kdlab.data.augment import crop_flip
from kdlab.data.crop_replay import CropReplay, image_sizes, resized_view_crops, tensor_view_crops
from kdlab.data.file_samples import FileBytes
from kdlab.data.replay_cache import TeacherRows, bytes_per_image, compress_logits, rebuild_logits
from kdlab.errors import KdlabError
from kdlab.models import create_model

pytestmark = pytest.mark.usefixtures("no_fsync")
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


# ---- compressed teacher rows ---------------------------------------------------------------------

def test_top_k_rebuild_keeps_the_top_logits_and_spreads_the_rest_evenly():
    z = torch.tensor([[2.0, -1.0, 0.5, 1.0, 0.0]])
    rows = compress_logits(z, 2)
    lse = math.log(sum(math.exp(v) for v in (2.0, -1.0, 0.5, 1.0, 0.0)))
    assert rows.classes.dtype == torch.int16 and rows.classes.tolist() == [[0, 3]]
    assert abs(float(rows.lse) - lse) < 1e-6
    out = rebuild_logits(rows, 5)[0]
    # the top two are the teacher's logits, up to float16 rounding of z - lse
    assert abs(float(out[0]) - 2.0) < 2**-10 and abs(float(out[3]) - 1.0) < 2**-10
    p_top = (math.exp(2.0) + math.exp(1.0)) / math.exp(lse)
    rest = 1 - p_top  # = (e^-1 + e^0.5 + e^0) / sum: spread evenly over the three other classes
    assert out[1] == out[2] == out[4]
    assert abs(float(out[1]) - (lse + math.log(rest / 3))) < 1e-3
    p = out.softmax(0)
    assert abs(float(p[1] + p[2] + p[4]) - rest) < 1e-3 and abs(float(p[0]) - math.exp(2.0 - lse)) < 1e-3
    assert abs(float(torch.logsumexp(out, 0)) - lse) < 1e-3  # the rebuilt logits keep the log-sum-exp


def test_a_full_cache_keeps_every_logit():
    z = torch.randn(64, 100, generator=torch.Generator().manual_seed(0)) * 4
    half = compress_logits(z, 0)
    assert half.classes is None and half.values.dtype == torch.float16
    err = (rebuild_logits(half, 100) - z).abs()
    bound = (z - torch.logsumexp(z, 1, keepdim=True)).abs() * 2**-11 + 1e-5  # float16 rounding of z - lse
    assert bool((err <= bound).all())
    full = compress_logits(z, 100, torch.float32)
    assert torch.allclose(rebuild_logits(full, 100), z, atol=2e-6)
    assert compress_logits(torch.zeros(0, 100), 5).values.shape == (0, 5)
    picked = full.rows(torch.tensor([3, 1]))
    assert isinstance(picked, TeacherRows) and torch.allclose(rebuild_logits(picked, 100), z[[3, 1]], atol=2e-6)


def test_storage_per_image_and_view():
    # ImageNet: 4 int16 box values + 1 flip byte + 4 lse bytes + k x (2 value + 2 class id) bytes
    assert bytes_per_image(1000, 10) == 8 + 1 + 4 + 40
    assert bytes_per_image(1000, 0) == 8 + 1 + 4 + 2000  # every class: float16 values, no ids
    assert bytes_per_image(100, 0, box_values=2, value_bytes=4) == 4 + 1 + 4 + 400  # CIFAR-100, float32


# ---- replayed crops --------------------------------------------------------------------------------

def _tensor_set(n=37):
    g = torch.Generator().manual_seed(2)
    return TensorImageSet(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 6)


def _normalize(x):
    return (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_tensor_replay_shows_the_online_crops_and_cycles_the_views():
    images = _tensor_set()
    kw = dict(batch_size=8, train=True, mean=MEAN, std=STD, crop_padding=2, with_index=True, seed=3)
    online = build_loader(images, **kw)
    views = [tensor_view_crops(online.plan(e), len(images), True) for e in (1, 2)]
    replay = build_loader(images, **kw)
    replay.set_replay(CropReplay(views))
    for epoch in (1, 2):  # V >= epochs: the very pixels of the online epochs
        online.set_epoch(epoch)
        replay.set_epoch(epoch)
        for a, b in zip(online, replay, strict=True):
            assert torch.equal(a.index, b.index) and torch.equal(a.image, b.image)
    replay.set_epoch(3)  # epoch 3 replays view 0, in epoch 3's own order
    order = online.plan(3).order
    seen = torch.cat([b.index for b in replay])
    assert torch.equal(seen, order)
    replay.set_epoch(3)
    for b in replay:
        idx = b.index
        ref = crop_flip(images.images[idx], views[0].boxes[idx].long(), views[0].flips[idx], 2)
        assert torch.allclose(b.image, _normalize(ref), atol=1e-6)


def _jpegs(folder: Path, n: int = 10) -> FileImageSet:
    g = torch.Generator().manual_seed(1)
    paths = []
    for i in range(n):
        h, w = 30 + 7 * (i % 3), 40 - 5 * (i % 4)
        x = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        paths.append(str(folder / f"{i}.jpg"))
        Image.fromarray(x).save(paths[-1], "JPEG", quality=90)
    return FileImageSet(tuple(paths), torch.arange(n) % 3, crop=(16, 16), resize=18)


def test_file_replay_shows_the_online_resized_crops(tmp_path):
    files = _jpegs(tmp_path)
    kw = dict(batch_size=4, train=True, mean=MEAN, std=STD, with_index=True, seed=5, num_workers=0)
    online = build_loader(files, **kw)
    all_idx = torch.arange(len(files))
    sizes = image_sizes(files, all_idx)
    assert sizes[1].tolist() == [37, 35]  # (height, width) from the header
    views = [resized_view_crops(sizes, 5, e, all_idx, True) for e in (1, 2)]
    assert views[0].boxes.shape == (10, 4) and not torch.equal(views[0].boxes, views[1].boxes)
    replay = build_loader(files, **kw)
    replay.set_replay(CropReplay(views))
    for epoch in (1, 2):
        online.set_epoch(epoch)
        replay.set_epoch(epoch)
        for a, b in zip(online, replay, strict=True):
            assert torch.equal(a.index, b.index) and torch.equal(a.image, b.image)
    online.set_epoch(1)
    first = {int(i): x for b in online for i, x in zip(b.index, b.image)}
    replay.set_epoch(3)  # view 0 again: each image exactly as in epoch 1
    for b in replay:
        for i, x in zip(b.index, b.image):
            assert torch.equal(x, first[int(i)])
    raw = FileBytes(files, train=True, flip=True)  # the device-decode path reads the same recorded box
    raw.replay = CropReplay(views)
    _, box, flip, *_ = raw[(4, 0, 1)]
    assert box.tolist() == views[1].boxes[4].tolist() and flip == bool(views[1].flips[4])


def test_a_fixed_size_file_set_replays_its_pad_crops(tmp_path):
    files = _jpegs(tmp_path)
    fixed = FileImageSet(files.paths, files.targets, crop=(16, 16), mode="fixed")
    kw = dict(batch_size=4, train=True, mean=MEAN, std=STD, crop_padding=2, with_index=True, seed=7, num_workers=0)
    online, replay = build_loader(fixed, **kw), build_loader(fixed, **kw)
    replay.set_replay(CropReplay([tensor_view_crops(online.plan(1), len(fixed), True)]))
    for epoch in (1, 2):  # one view: epoch 2 shows epoch 1's crops again
        online.set_epoch(1)
        shown = {int(i): x for b in online for i, x in zip(b.index, b.image)}
        replay.set_epoch(epoch)
        for b in replay:
            assert all(torch.equal(x, shown[int(i)]) for i, x in zip(b.index, b.image))


# ---- experiments on digits -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "teacher.pt"
    torch.manual_seed(2)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), path)
    return path


def _cfg(out, ckpt, name, *extra):
    return load_config(None, [
        "data.dataset=digits", "data.root=.", "data.subset_size=160", "data.val_fraction=0.2", "data.batch_size=32",
        "data.eval_batch_size=50", "data.crop_padding=1", "data.num_workers=0", "student.name=resnet8",
        "teacher.name=resnet8", f"teacher.checkpoint={ckpt}", "method.name=kd", "schedule.name=constant",
        "schedule.epochs=2", "train.device=cpu", "train.amp=off", "train.channels_last=off",
        "train.deterministic=true", "train.tensorboard=false", "train.progress=false", "train.test_at_end=false",
        f"out_dir={out}", f"name={name}", *extra])


REPLAY = ["data.cache_teacher=true", "data.cache_view=replay", "data.cache_views=2"]


def _count_teacher_images(monkeypatch, ckpt):
    seen = {"images": 0}
    build = experiment.build_model

    def counted(name, num_classes, kwargs, checkpoint, weights=None):
        model = build(name, num_classes, kwargs, checkpoint, weights)
        if checkpoint == str(ckpt):
            model.register_forward_hook(lambda m, i, o: seen.__setitem__("images", seen["images"] + i[0].shape[0]))
        return model

    monkeypatch.setattr(experiment, "build_model", counted)
    return seen


def _state(out, name):
    return torch.load(out / name / "checkpoints" / "last.pt", weights_only=True)["distiller"]


def _max_diff(a, b):
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_replay_with_a_full_cache_trains_like_online_kd_without_the_teacher(teacher_ckpt, tmp_path, monkeypatch):
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "online"))
    seen = _count_teacher_images(monkeypatch, teacher_ckpt)
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "exact", *REPLAY, "data.cache_dtype=float32"))
    assert seen["images"] == 2 * 128  # V = 2 caching passes over the 128 training images, none while training
    assert _max_diff(_state(tmp_path, "exact"), _state(tmp_path, "online")) < 1e-6
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "half", *REPLAY))  # float16 log-probabilities
    assert seen["images"] == 4 * 128
    assert _max_diff(_state(tmp_path, "half"), _state(tmp_path, "online")) < 5e-3  # measured 1.4e-3
    # the replayed images are the recorded crops: pixel-equal to crop + flip of the stored rows
    exp = experiment.build_experiment(_cfg(tmp_path, teacher_ckpt, "half", *REPLAY))
    assert seen["images"] == 4 * 128  # read from the run folder
    view = torch.load(tmp_path / "half" / "teacher_replay" / "view0001.pt", weights_only=True)
    raw = exp.data.train.images
    assert next(iter(exp.train_loader)).index is None  # KD does not ask for indices: the wrapper drops them
    base = exp.train_loader.loader
    base.set_epoch(2)
    for b in base:
        ref = crop_flip(raw[b.index], view["boxes"][b.index].long(), view["flips"][b.index], 1)
        assert torch.allclose(b.image, exp.train_loader.loader.normalize(ref), atol=1e-6)


def test_the_cache_is_reused_and_recomputed_on_a_fingerprint_change(teacher_ckpt, tmp_path, monkeypatch):
    seen = _count_teacher_images(monkeypatch, teacher_ckpt)
    experiment.build_experiment(_cfg(tmp_path, teacher_ckpt, "fp", *REPLAY, "data.cache_topk=3"))
    assert seen["images"] == 256
    exp = experiment.build_experiment(_cfg(tmp_path, teacher_ckpt, "fp", *REPLAY, "data.cache_topk=3"))
    assert seen["images"] == 256  # same fingerprint: nothing recomputed
    batch = next(iter(exp.train_loader))
    t = batch.extra["teacher_logits"]
    assert t.shape == (32, 10) and bool(((t == t.min(1, keepdim=True).values).sum(1) == 7).all())  # 7 share r
    (tmp_path / "fp" / "teacher_replay" / "view0001.pt").write_bytes(b"torn")
    experiment.build_experiment(_cfg(tmp_path, teacher_ckpt, "fp", *REPLAY, "data.cache_topk=3"))
    assert seen["images"] == 256 + 128  # only the unreadable view
    experiment.build_experiment(_cfg(tmp_path, teacher_ckpt, "fp", *REPLAY, "data.cache_topk=4"))
    assert seen["images"] == 256 + 128 + 256  # k changed: every view


def test_what_cannot_be_replayed_is_refused_in_one_line(teacher_ckpt, tmp_path):
    def refused(match, *extra):
        with pytest.raises(KdlabError, match=match) as err:
            experiment.build_experiment(_cfg(tmp_path, teacher_ckpt, "no", *extra))
        assert "\n" not in str(err.value)

    refused("replay.*set data.cache_teacher=true", "data.cache_view=replay")
    refused("needs teacher stages; set data.cache_teacher=false", *REPLAY, "method.name=fitnet")
    refused("'tuples' batches; use data.cache_view=augmented", *REPLAY, "method.name=comparative")
    refused("data.per_class=4 may serve an image twice", *REPLAY, "data.per_class=4")
    refused("data.cache_topk=11 exceeds the 10 classes", *REPLAY, "data.cache_topk=11")
    with pytest.raises(KdlabError, match="data.cache_views=0 is out of range"):
        _cfg(tmp_path, teacher_ckpt, "no", *REPLAY, "data.cache_views=0")
    with pytest.raises(KdlabError, match="data.cache_dtype='bfloat16' is out of range"):
        _cfg(tmp_path, teacher_ckpt, "no", *REPLAY, "data.cache_dtype=bfloat16")


def test_a_resumed_replay_run_continues_exactly(teacher_ckpt, tmp_path):
    three = ("schedule.epochs=3",)  # epoch 3 replays view 0 (V = 2)
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "whole", *REPLAY, *three))
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "cut", *REPLAY, *three, "train.max_steps=6"))
    ck = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["global_step"]) == (2, 2, 6)  # stopped mid-epoch 2
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "cut", *REPLAY, *three), resume=True)
    assert _max_diff(_state(tmp_path, "cut"), _state(tmp_path, "whole")) == 0.0


def _imagenet_tree(root: Path, classes: int = 3, train: int = 8) -> Path:
    g = torch.Generator().manual_seed(4)
    for split, n in (("train", train), ("val", 2)):
        for c in range(classes):
            (root / split / f"n0{c}").mkdir(parents=True)
            for i in range(n):
                h, w = 30 + 6 * (i % 3), 44 - 7 * (i % 2)
                x = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(x).save(root / split / f"n0{c}" / f"{i}.JPEG", "JPEG", quality=90)
    return root


def test_a_file_set_replays_its_resized_crops_in_the_workers(teacher_ckpt, tmp_path, monkeypatch):
    tree = _imagenet_tree(tmp_path / "imagenet")
    teacher = tmp_path / "t3.pt"
    torch.manual_seed(3)
    torch.save(create_model("resnet8", num_classes=3).state_dict(), teacher)
    files = ("data.dataset=imagenet", f"data.root={tree}", "data.subset_size=null", "data.val_fraction=0",
             "data.image_size=16", "data.in_memory=false", "data.num_workers=1", "data.batch_size=8",
             "data.eval_batch_size=10", f"teacher.checkpoint={teacher}")
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "online", *files))
    seen = _count_teacher_images(monkeypatch, teacher)
    experiment.run_experiment(_cfg(tmp_path, teacher_ckpt, "replay", *files, *REPLAY, "data.cache_dtype=float32"))
    assert seen["images"] == 2 * 24  # the caching passes only
    assert _max_diff(_state(tmp_path, "replay"), _state(tmp_path, "online")) < 1e-6
    view = torch.load(tmp_path / "replay" / "teacher_replay" / "view0000.pt", weights_only=True)
    assert view["boxes"].shape == (24, 4) and view["boxes"].dtype == torch.int16
    top, left, h, w = view["boxes"].long().unbind(1)  # RandomResizedCrop windows inside the 42 x 44 px at most
    assert bool((h > 0).all() & (w > 0).all() & (top + h <= 42).all() & (left + w <= 44).all())


# ---- two processes -----------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_processes_build_the_same_cache_files_as_one_and_train_alike(teacher_ckpt, tmp_path):
    from test_distributed import env

    train = ["train.max_steps=5", "train.sync_bn=true", "schedule.epochs=3"]  # into epoch 2 (4 steps per epoch)
    cfg = _cfg(tmp_path, teacher_ckpt, "one", *REPLAY, "data.cache_topk=4", f"data.root={ROOT}", *train,
               "data.eval_batch_size=24")  # 128 images: 6 batches, 3 per process, the last one short
    experiment.run_experiment(cfg)
    spec = {"data": dict(vars(cfg.data)), "student": {"name": "resnet8"}, "teacher": {"name": "resnet8",
            "checkpoint": str(teacher_ckpt)}, "method": {"name": "kd"},
            "schedule": {"name": "constant", "epochs": 3}, "name": "two", "out_dir": str(tmp_path),
            "train": {"device": "cpu", "amp": "off", "channels_last": "off", "deterministic": True, "sync_bn": True,
                      "tensorboard": False, "progress": False, "max_steps": 5, "test_at_end": False}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kdlab",
           "train", str(path)]
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    for v in (0, 1):
        one = torch.load(tmp_path / "one" / "teacher_replay" / f"view{v:04d}.pt", weights_only=True)
        two = torch.load(tmp_path / "two" / "teacher_replay" / f"view{v:04d}.pt", weights_only=True)
        assert one.keys() == two.keys()
        for key, value in one.items():
            assert torch.equal(value, two[key]) if isinstance(value, torch.Tensor) else value == two[key], key
    assert _max_diff(_state(tmp_path, "two"), _state(tmp_path, "one")) < 1e-6  # the sharded replay trains alike


@pytest.mark.slow
def test_realistic_jpegs_replay_the_online_pixels_through_reduced_decoding(tmp_path):
    from pipeline_jpegs import imagenet_layout

    tree = imagenet_layout(tmp_path / "imagenet", classes=3, train=6, val=1)  # 500 x 375-like JPEGs
    torch.manual_seed(5)
    teacher = tmp_path / "t.pt"
    torch.save(create_model("resnet8", num_classes=3).state_dict(), teacher)
    files = ("data.dataset=imagenet", f"data.root={tree}", "data.subset_size=null", "data.val_fraction=0",
             "data.image_size=64", "data.in_memory=false", "data.num_workers=2", "data.batch_size=6",
             "data.eval_batch_size=8")
    exp = experiment.build_experiment(_cfg(tmp_path, teacher, "replay", *files, *REPLAY, "data.cache_dtype=float32"))
    online = build_loader(exp.data.train, batch_size=6, train=True, mean=exp.data.mean, std=exp.data.std,
                          with_index=True, seed=0, num_workers=2)
    t = exp.distiller.teacher.eval()
    for epoch in (1, 2, 3):  # epoch 3 replays view 0: epoch 1's crops in epoch 3's order
        online.set_epoch(1 if epoch == 3 else epoch)
        shown = {int(i): x for b in online for i, x in zip(b.index, b.image)}
        exp.train_loader.set_epoch(epoch)
        for b in exp.train_loader.loader:  # the replaying loader (its wrapper adds the logits)
            assert all(torch.equal(x, shown[int(i)]) for i, x in zip(b.index, b.image))
        for b in exp.train_loader:
            with torch.no_grad():
                assert torch.allclose(b.extra["teacher_logits"], t(b.image), atol=1e-5)
