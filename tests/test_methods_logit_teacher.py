"""NKD, WSLD, DIST and CKD-SW as methods: terms, teacher isolation, defaults and shipped recipes."""

import pytest
import torch
import torch.nn.functional as F

import kdlab
from kdlab import losses
from kdlab.config import list_configs, load_config
from kdlab.errors import KdlabError
from kdlab.methods import describe_method, method_defaults

PAIRS = ["resnet56_resnet20", "resnet110_resnet32", "resnet32x4_resnet8x4", "wrn_40_2_wrn_16_2",
         "wrn_40_2_wrn_40_1", "vgg13_vgg8", "resnet32x4_ShuffleV1", "wrn_40_2_ShuffleV1",
         "vgg13_MobileNetV2", "ResNet50_MobileNetV2", "resnet32x4_ShuffleV2"]



@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return kdlab.create_model("resnet14", num_classes=10), kdlab.create_model("resnet8", num_classes=10)


def _inputs(n=8, size=16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _expected(method, zs, zt, y):
    if method == "nkd":
        return {"ce": 0.5 * F.cross_entropy(zs, y), "nkd": losses.nkd(zs, zt, y, 2.0, 1.5)}
    if method == "wsld":
        return {"ce": 0.5 * F.cross_entropy(zs, y), "wsld": losses.wsld(zs, zt, y, 2.0, 1.5)}
    if method == "dist":
        return {"ce": 0.5 * F.cross_entropy(zs, y), "dist": 3.0 * losses.dist(zs, zt, 1.0, 1.5, 2.0)}
    return {"ce": 0.5 * F.cross_entropy(zs, y), "ckd": 3.0 * losses.ckd(zs, zt, 2.0)}


HPARAMS = {
    "nkd": dict(temperature=2.0, gamma=1.5, ce_weight=0.5),
    "wsld": dict(temperature=2.0, alpha=1.5, ce_weight=0.5),
    "dist": dict(temperature=2.0, beta=1.0, gamma=1.5, ce_weight=0.5, kd_weight=3.0),
    "ckd": dict(temperature=2.0, kd_weight=3.0, ce_weight=0.5),
}


@pytest.mark.parametrize("method", ["nkd", "wsld", "dist", "ckd"])
def test_terms_equal_the_weighted_pure_losses(pair, method):
    teacher, student = pair
    d = kdlab.create_distiller(method, student=student, teacher=teacher, **HPARAMS[method]).train()
    x, y = _inputs()
    logits, terms = d(x, y)
    with torch.no_grad():
        zt = teacher.eval()(x)
    expected = _expected(method, logits.detach(), zt, y)
    assert set(terms) == set(expected)
    for k in expected:
        assert terms[k].item() == pytest.approx(expected[k].item(), rel=1e-5), k
    assert d.extra_parameters() == 0


@pytest.mark.parametrize("method", ["nkd", "wsld", "dist", "ckd"])
def test_gradients_reach_the_student_only(pair, method):
    teacher, student = pair
    d = kdlab.create_distiller(method, student=student, teacher=teacher).train()
    assert not teacher.training
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    x, y = _inputs()
    opt.zero_grad()
    _, terms = d(x, y)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    opt.step()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN stats changed"


def test_defaults_follow_the_references():
    assert method_defaults("nkd") == {"temperature": 3.0, "gamma": 3.5, "ce_weight": 1.0}
    assert method_defaults("wsld") == {"temperature": 4.0, "alpha": 2.25, "ce_weight": 1.0}
    assert method_defaults("dist") == {"temperature": 4.0, "beta": 1.0, "gamma": 1.0, "ce_weight": 1.0,
                                       "kd_weight": 2.0}
    assert method_defaults("ckd") == {"temperature": 1.0, "kd_weight": 100.0, "ce_weight": 1.0,
                                      "negatives": "teacher_student"}
    assert describe_method("nkd").startswith("Normalized KD")
    assert describe_method("ckd").startswith("Sample-wise contrastive KD")


def test_ckd_rejects_a_bad_negatives_choice(pair):
    teacher, student = pair
    with pytest.raises(KdlabError, match="negatives must be one of"):
        kdlab.create_distiller("ckd", student=student, teacher=teacher, negatives="both")


def test_shipped_recipes_cover_the_pairs_and_carry_reference_values():
    names = set(list_configs())
    for method in ("nkd", "wsld", "dist", "ckd"):
        for p in PAIRS:
            assert f"cifar100/{method}/{p}" in names
        assert f"tiny-imagenet/{method}/resnet32x4_resnet8x4" in names
    for method in ("mixup", "mixup3", "cutmix"):
        assert f"tiny-imagenet/{method}/resnet32x4_resnet8x4" in names
    for s in ("resnet20", "resnet32", "resnet8x4", "wrn_16_2", "wrn_40_1", "vgg8", "ShuffleV1", "ShuffleV2",
              "MobileNetV2"):
        assert f"cifar100/uskd/{s}" in names
    assert "tiny-imagenet/uskd/resnet8x4" in names

    ckd = load_config("cifar100/ckd/vgg13_MobileNetV2")
    assert ckd.method.params == {"temperature": 2.0, "kd_weight": 50.0, "ce_weight": 1.0}
    assert (ckd.data.batch_size, ckd.optim.lr) == (32, 0.01)
    assert (ckd.schedule.name, ckd.schedule.epochs, ckd.schedule.min_lr) == ("cosine_epoch", 480, 0.0)
    assert load_config("cifar100/ckd/resnet56_resnet20").method.params["kd_weight"] == 10.0
    wrn = load_config("cifar100/ckd/wrn_40_2_wrn_40_1")
    assert (wrn.data.batch_size, wrn.optim.lr, wrn.method.params["temperature"]) == (32, 0.05, 2.0)
    assert load_config("cifar100/nkd/resnet32x4_ShuffleV2").optim.lr == 0.01
    uskd = load_config("cifar100/uskd/resnet8x4")
    assert uskd.teacher.name == "" and uskd.method.params["alpha"] == 0.1


def test_every_new_recipe_names_valid_hyper_parameters_and_models():
    models = set(kdlab.list_models())
    for name in list_configs():
        ds, method = name.split("/")[:2]
        if method not in ("nkd", "uskd", "wsld", "dist", "ckd", "mixup", "mixup3", "cutmix"):
            continue
        if ds in ("imagenet", "places365"):  # torchvision models; checked in test_recipes_imagenet
            continue
        cfg = load_config(name)
        assert cfg.method.name == method
        assert set(cfg.method.params) <= set(method_defaults(method)), name
        assert cfg.student.name in models, name
        assert (cfg.teacher.name in models) if method != "uskd" else not cfg.teacher.name, name
        parts = [ds, method] + ([cfg.teacher.name] if cfg.teacher.name else []) + [cfg.student.name]
        if cfg.data.subset_size:  # few-sample recipes: one run folder per subset size
            parts.append(f"n{cfg.data.subset_size}")
        assert cfg.name == "-".join(parts), name
