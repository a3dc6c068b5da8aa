"""ImageNet and Places365 recipes: each reference's settings, teachers by name, and every recipe
builds its distiller (slow: ImageNet-sized models, 1000 and 365 classes, probed at 64 px).

The expected values are written out here from the references (mdistiller and CKD-SW
``configs/{imagenet,places365}/*``, cls_KD, DIST, SimKD; methods.md §1 and §2.7), not read from the
recipes.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch

import kdlab
from kdlab.config import list_configs, load_config
from kdlab.methods import method_class, method_defaults
from kdlab.methods.base import DATA_FACTS

PAIRS = {"resnet34_resnet18": ("torchvision:resnet34", "torchvision:resnet18"),
         "resnet50_MobileNetV1": ("torchvision:resnet50", "MobileNetV1")}
METHODS = ("kd", "dkd", "ckd", "reviewkd", "crd", "at", "ofd", "nkd", "dist", "simkd")
# method -> (batch, lr, epochs, schedule) of the reference (OFD's R50->MV1 batch 128, lr 0.05 below)
SOLVER = {"kd": (512, 0.2, 100, "multistep"), "dkd": (512, 0.2, 100, "multistep"), "at": (512, 0.2, 100, "multistep"),
          "ckd": (512, 0.2, 200, "cosine_epoch"), "crd": (256, 0.1, 100, "multistep"),
          "reviewkd": (256, 0.1, 100, "multistep"), "nkd": (256, 0.1, 100, "multistep"),
          "dist": (256, 0.1, 100, "multistep"), "simkd": (256, 0.1, 120, "multistep"),
          "ofd": (256, 0.1, 100, "multistep")}
PARAMS = {  # (method, pair) -> hyper-parameters that must hold
    ("kd", None): {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5},
    ("dkd", "resnet34_resnet18"): {"beta": 0.5, "temperature": 1.0, "warmup_epochs": 1, "alpha": 1.0},
    ("dkd", "resnet50_MobileNetV1"): {"beta": 2.0, "temperature": 1.0, "warmup_epochs": 1, "alpha": 1.0},
    ("ckd", None): {"kd_weight": 10.0, "temperature": 1.0, "ce_weight": 1.0},
    ("reviewkd", "resnet34_resnet18"): {"weight": 1.0, "warmup_epochs": 1, "student_preact": True},
    ("reviewkd", "resnet50_MobileNetV1"): {"weight": 8.0, "warmup_epochs": 1, "student_preact": True},
    ("crd", None): {"weight": 0.8, "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5},
    ("at", None): {"p": 2.0, "weight": 1000.0},
    ("ofd", None): {"weight": 1e-4, "teacher_mode": "train"},
    ("nkd", None): {"temperature": 1.0, "gamma": 1.5, "ce_weight": 1.0},
    ("dist", None): {"temperature": 1.0, "beta": 1.0, "gamma": 1.0, "kd_weight": 2.0},
    ("simkd", None): {"factor": 2},
}
TEACHER_WEIGHTS = {"torchvision:resnet34": "torchvision:ResNet34_Weights.IMAGENET1K_V1",
                   "torchvision:resnet50": "torchvision:ResNet50_Weights.IMAGENET1K_V1"}


def _full(cfg) -> dict:
    return {**method_defaults(cfg.method.name), **cfg.method.params}


def _recipes(prefix: str) -> list[str]:
    return [n for n in list_configs() if n.startswith(prefix)]


def test_the_shared_imagenet_recipe():
    cfg = load_config("imagenet/ce/resnet18")
    d, o, s = cfg.data, cfg.optim, cfg.schedule
    assert (d.dataset, d.image_size, d.in_memory) == ("imagenet", 224, False)
    assert (o.name, o.momentum, o.weight_decay, o.nesterov) == ("sgd", 0.9, 1e-4, False)
    assert (s.name, s.epochs, s.milestones, s.gamma) == ("multistep", 100, [30, 60, 90], 0.1)
    assert (d.batch_size, o.lr) == (256, 0.1)
    assert cfg.method.name == "ce" and cfg.student.name == "torchvision:resnet18"


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("method", METHODS)
def test_each_imagenet_distillation_recipe_has_its_references_settings(method, pair):
    cfg = load_config(f"imagenet/{method}/{pair}")
    teacher, student = PAIRS[pair]
    assert (cfg.teacher.name, cfg.student.name, cfg.method.name) == (teacher, student, method)
    assert cfg.teacher.weights == TEACHER_WEIGHTS[teacher] and not cfg.teacher.checkpoint
    batch, lr, epochs, schedule = SOLVER[method]
    if (method, pair) == ("ofd", "resnet50_MobileNetV1"):
        batch, lr = 128, 0.05  # mdistiller configs/imagenet/r50_mv1/ofd.yaml
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.schedule.epochs, cfg.schedule.name) == (batch, lr, epochs, schedule)
    assert cfg.optim.weight_decay == 1e-4 and cfg.data.dataset == "imagenet"
    if schedule == "multistep" and method != "ofd":
        assert cfg.schedule.milestones == [30, 60, 90]
    if (method, pair) == ("ofd", "resnet34_resnet18"):  # clovaai: lr * 0.1 ** (epoch // 30), epochs from 1
        assert cfg.schedule.milestones == [29, 59, 89] and cfg.optim.nesterov
    full = _full(cfg)
    want = {**PARAMS.get((method, None), {}), **PARAMS.get((method, pair), {})}
    assert {k: full[k] for k in want} == want
    assert cfg.name == f"imagenet-{method}-{teacher.split(':')[-1]}-{student.split(':')[-1]}"


def test_imagenet_baselines_and_self_distillation():
    for model in ("resnet18", "resnet34", "resnet50", "MobileNetV1"):
        cfg = load_config(f"imagenet/ce/{model}")
        assert cfg.method.name == "ce" and cfg.student.name.split(":")[-1] == model
    for student, grad_clip in (("resnet18", None), ("MobileNetV1", 5.0)):
        cfg = load_config(f"imagenet/uskd/{student}")
        full = _full(cfg)
        assert {k: full[k] for k in ("alpha", "beta", "mu", "feature_stage")} == {
            "alpha": 1.0, "beta": 0.1, "mu": 0.005, "feature_stage": -2}
        assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.grad_clip) == (256, 0.1, grad_clip)
    assert load_config("imagenet/nkd/resnet50_MobileNetV1").optim.grad_clip == 5.0


def test_places365_recipes_follow_the_ckd_seed():
    names = set(_recipes("places365/"))
    assert names == {"places365/ce/resnet34", "places365/ce/resnet18", "places365/kd/resnet34_resnet18",
                     "places365/dkd/resnet34_resnet18", "places365/ckd/resnet34_resnet18"}
    params = {"kd": {"temperature": 1.0, "ce_weight": 0.5, "kd_weight": 0.5},
              "dkd": {"beta": 0.5, "temperature": 1.0, "warmup_epochs": 1},
              "ckd": {"kd_weight": 10.0, "temperature": 1.0}}
    for name in names:
        cfg = load_config(name)
        assert cfg.data.dataset == "places365" and cfg.data.image_size == 224
        # batch 256, lr 0.2, 100 epochs; the seed's default decay stages (150, 180, 210) are never reached
        got = (cfg.data.batch_size, cfg.optim.lr, cfg.schedule.epochs, cfg.schedule.name)
        assert got == (256, 0.2, 100, "constant"), name
        method = name.split("/")[1]
        if method != "ce":
            full = _full(cfg)
            assert {k: full[k] for k in params[method]} == params[method]
            assert cfg.teacher.checkpoint == "runs/places365-ce-resnet34/checkpoints/best.pt"
            assert load_config("places365/ce/resnet34").name == "places365-ce-resnet34"


# ------------------------------------------------------------------------------------------------
# every recipe builds its distiller


def _classes(dataset: str) -> int:
    return {"imagenet": 1000, "places365": 365}[dataset]


def _reviewkd(in_ch: list[int], out_ch: list[int]):
    def check(d) -> None:  # mdistiller's ImageNet ReviewKD lists, derived here from the networks
        assert (d.in_channels, d.out_channels) == (in_ch, out_ch)
        assert d.s_part == "preact" and d.t_part == "preact"
    return check


def _crd(dims: tuple[int, int]):
    def check(d) -> None:  # mdistiller's CRD.FEAT.STUDENT_DIM / TEACHER_DIM
        assert (d.embed_s.linear.in_features, d.embed_t.linear.in_features) == dims
        assert d.embed_s.linear.out_features == 128
    return check


def _uskd(width: int):
    def check(d) -> None:  # cls_KD's `channel`: the weak head reads the stage before the last
        assert d.aux_head.in_features == width
    return check


def _ofd(d) -> None:  # margins from the teacher's BN affine parameters; teacher in train mode
    assert d.margin_source == ["bn"] * 4 and d.teacher.training


def _simkd(d) -> None:  # the deployed student ends in the teacher's 1000-way classifier
    with torch.no_grad():
        assert d.inference_model().eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


CHECKS = {
    "imagenet/reviewkd/resnet34_resnet18": _reviewkd([64, 128, 256, 512, 512], [64, 128, 256, 512, 512]),
    "imagenet/reviewkd/resnet50_MobileNetV1": _reviewkd([128, 256, 512, 1024, 1024], [256, 512, 1024, 2048, 2048]),
    "imagenet/crd/resnet34_resnet18": _crd((512, 512)),
    "imagenet/crd/resnet50_MobileNetV1": _crd((1024, 2048)),
    "imagenet/uskd/resnet18": _uskd(256),
    "imagenet/uskd/MobileNetV1": _uskd(512),
    "imagenet/ofd/resnet34_resnet18": _ofd,
    "imagenet/ofd/resnet50_MobileNetV1": _ofd,
    "imagenet/simkd/resnet50_MobileNetV1": _simkd,
}


@pytest.mark.slow
def test_every_imagenet_and_places365_recipe_builds_its_distiller(capsys):
    protos: dict[tuple[str, int], torch.nn.Module] = {}

    def model(name: str, classes: int) -> torch.nn.Module:
        if (name, classes) not in protos:  # one construction per architecture; each distiller gets a copy
            protos[(name, classes)] = kdlab.create_model(name, num_classes=classes)
        return copy.deepcopy(protos[(name, classes)])

    names = _recipes("imagenet/") + _recipes("places365/")
    assert len(names) >= 31
    t0 = time.perf_counter()
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    checked = set()
    for name in names:
        cfg = load_config(name)
        classes = _classes(cfg.data.dataset)
        student = model(cfg.student.name, classes)
        teacher = model(cfg.teacher.name, classes) if method_class(cfg.method.name).uses_teacher else None
        facts = dict(zip(DATA_FACTS, (64, 500, classes, cfg.data.batch_size)))
        params = dict(cfg.method.params)
        params |= {k: v for k, v in facts.items() if k in method_defaults(cfg.method.name) and k not in params}
        d = kdlab.create_distiller(cfg.method.name, student=student, teacher=teacher, **params)
        if not d.needs_index:  # CRD needs the data layer's indices; the others run a forward here
            logits, losses = d(x, y, epoch=1)
            assert logits.shape == (2, classes) and all(torch.isfinite(v) for v in losses.values()), name
        if name in CHECKS:
            CHECKS[name](d)
            checked.add(name)
        del d, student, teacher  # one distiller alive at a time: 1.4 GB peak RSS, not 4.7 GB
    elapsed = time.perf_counter() - t0
    assert checked == set(CHECKS)
    with capsys.disabled():
        print(f"\n{len(names)} ImageNet/Places365 distillers built and run at 64 px in {elapsed:.1f} s")
