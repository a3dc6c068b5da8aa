"""Feature methods (FitNet, AT, NST, VID, KDSVD, OFD, AB, FSP, FT): one training step per standard pair.

Each step checks a finite loss, gradients of the distillation terms in the student and in the
method's connectors, none in the teacher, and unchanged teacher weights (OFD's train-mode teacher
may move its BN statistics, never its weights). Models are cached per module; every test removes
its hooks. Inputs are 2 images at 32 px.
"""

from __future__ import annotations

import functools

import pytest
import torch

import kdlab
from kdlab.errors import KdlabError

METHODS = ["fitnet", "at", "nst", "vid", "kdsvd", "ofd", "ab", "fsp", "ft"]
TWO_STAGE = {"ab", "fsp", "ft"}
PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("vgg13", "MobileNetV2"),
         ("resnet32x4", "ShuffleV2"), ("ResNet50", "vgg8")]
EQUAL_CHANNELS = {("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2")}



@functools.cache
def _model(name: str, role: str) -> torch.nn.Module:
    torch.manual_seed(len(name))
    return kdlab.create_model(name, num_classes=10)


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g)


def _build(method, teacher, student, **hp):
    t, s = _model(teacher, "teacher"), _model(student, "student")
    s.zero_grad(set_to_none=True)
    return kdlab.create_distiller(method, student=s, teacher=t, **hp)


def _release(d):
    d._rec_s.remove()
    d._rec_t.remove()
    d.zero_grad(set_to_none=True)


def _own(d):
    """The method's own parameters (connectors, regressors, paraphraser…), by name."""
    return {n: p for n, p in d.named_parameters() if not n.startswith(("student.", "teacher."))}


def _check_step(d, phase):
    d.train()
    d.phase = phase
    teacher_before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    x, y = _inputs()
    try:
        _, terms = d(x, y)
    finally:
        d.phase = "main"
    assert terms and all(torch.isfinite(v) for v in terms.values()), terms
    distill = [v for k, v in terms.items() if k != "ce"]
    if not distill:  # AB/FSP main phase: CE only
        assert set(terms) == {"ce"}
        return
    sum(distill).backward()
    assert all(p.grad is None for p in d.teacher.parameters())
    for k, v in d.teacher.state_dict().items():
        if d.teacher_mode == "train" and ("running_" in k or "num_batches" in k):
            continue
        assert torch.equal(v, teacher_before[k]), f"teacher {k} changed"
    optimised = {id(p) for p in (d.init_parameters() if phase == "init" else d.trainable_parameters())}
    own = _own(d)
    for name, p in own.items():
        if id(p) in optimised:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient in {name}"
        else:
            assert p.grad is None, f"{name} is frozen in the {phase} phase but got a gradient"
    trained_own = [p for p in own.values() if id(p) in optimised]
    if trained_own:
        assert any(p.grad.abs().sum() > 0 for p in trained_own)
    student_grads = [p.grad for p in d.student.parameters() if p.grad is not None]
    if d.method_name == "ft" and phase == "init":
        assert not student_grads  # the init phase trains the paraphraser only
    else:
        assert student_grads and any(g.abs().sum() > 0 for g in student_grads)
        assert all(torch.isfinite(g).all() for g in student_grads)


def _hp(method, pair):
    return {"match_size": True} if method == "kdsvd" and pair not in EQUAL_CHANNELS else {}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("method", METHODS)
def test_one_training_step(method, pair):
    if method == "fsp" and pair not in EQUAL_CHANNELS:
        pytest.skip("FSP cannot serve unequal channels (tested below)")
    d = _build(method, *pair, **_hp(method, pair))
    try:
        if method in TWO_STAGE:
            assert d.init_epochs == 30
            if not (method == "ft" and pair[0] == "ResNet50"):  # a 148M-parameter paraphraser: main phase only
                _check_step(d, "init")
            d.zero_grad(set_to_none=True)
        _check_step(d, "main")
        if method == "ofd":
            assert d.teacher.training and d.teacher_mode == "train"
    finally:
        _release(d)


@pytest.mark.parametrize("method", ["ab", "fsp"])
def test_two_stage_main_phase_is_ce_only_and_skips_the_teacher(method):
    d = _build(method, "resnet32x4", "resnet8x4")
    calls = []
    h = d.teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        d.train()
        logits, terms = d(*_inputs())
        assert set(terms) == {"ce"} and not calls
        assert torch.allclose(terms["ce"], torch.nn.functional.cross_entropy(logits, _inputs()[1]))
        d.phase = "init"
        d(*_inputs())
        assert calls
    finally:
        d.phase = "main"
        h.remove()
        _release(d)


def test_connectors_are_extra_parameters_and_leave_the_inference_model():
    d = _build("vid", "wrn_40_2", "wrn_16_2")
    try:
        n_own = sum(p.numel() for p in _own(d).values())
        assert d.extra_parameters() == n_own > 0
        assert len(list(d.log_scales)) == 3 and all(p.requires_grad for p in d.log_scales)
        assert any(k.startswith("log_scales.") for k in d.state_dict_without_teacher())
        assert d.inference_model() is d.student
        ids = {id(p) for p in d.trainable_parameters()}
        assert all(id(p) in ids for p in d.log_scales)  # mdistiller's bug: never optimised
        opt = torch.optim.SGD(d.trainable_parameters(), lr=1.0)
        before = [p.detach().clone() for p in d.log_scales]
        _, terms = d(*_inputs())
        sum(terms.values()).backward()
        opt.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, d.log_scales))
    finally:
        _release(d)


def test_ofd_margins_come_from_teacher_bn_or_statistics():
    d = _build("ofd", "wrn_40_2", "wrn_16_2")
    try:
        assert d.margin_source == ["bn"] * 3
        bn = d.teacher.get_submodule(kdlab.features.get_taps(d.teacher).bn_before_relu[2])
        assert torch.allclose(d.margin2, kdlab.losses.ofd_margin(bn.weight, bn.bias))
        assert (d.margin0 < 0).all()
    finally:
        _release(d)
    d = _build("ofd", "ShuffleV2", "resnet8x4", teacher_mode="eval")
    try:
        assert d.margin_source == ["statistics"] * 3 and not d.teacher.training
        margins = [d.margin0, d.margin1, d.margin2]
        assert all(torch.isfinite(m).all() and (m < 0).all() for m in margins)
        assert [m.numel() for m in margins] == [116, 232, 464]
        d.train()
        assert not d.teacher.training
    finally:
        _release(d)


def test_ofd_pairs_the_deepest_stages_and_aligns_margins():
    d = _build("ofd", "ResNet50", "resnet8x4")  # 4 teacher stages, 3 student stages
    try:
        assert d.pairs == [(0, 1), (1, 2), (2, 3)]
        assert [getattr(d, f"margin{k}").numel() for k in range(3)] == [512, 1024, 2048]
    finally:
        _release(d)


@pytest.mark.parametrize("pair", PAIRS[2:], ids=lambda p: f"{p[0]}-{p[1]}")
def test_unservable_pairs_fail_at_construction_with_one_line(pair):
    with pytest.raises(KdlabError, match=r"fsp: needs equal channel counts.*stages\[1\]") as e:
        _build("fsp", *pair)
    assert "\n" not in str(e.value)
    with pytest.raises(KdlabError, match="kdsvd: the paired stages differ both in channels") as e:
        _build("kdsvd", *pair)
    assert "\n" not in str(e.value) and "match_size" in str(e.value)


def test_kdsvd_space_switch():
    d = _build("kdsvd", "resnet32x4", "resnet8x4")
    try:
        assert d.space == "channel"
    finally:
        _release(d)
    d = _build("kdsvd", "resnet32x4", "resnet8x4", space="width")
    try:
        assert d.space == "width"
        _check_step(d, "main")
    finally:
        _release(d)
    with pytest.raises(KdlabError, match="space='channel' needs equal channels"):
        _build("kdsvd", "wrn_40_2", "resnet8x4", space="channel")
    with pytest.raises(KdlabError, match="space must be one of"):
        _build("kdsvd", "resnet32x4", "resnet8x4", space="rows")


def test_fitnet_regressor_cases_and_bad_hint_layer():
    from kdlab.methods.modules.conv_reg import ConvReg

    cases = {((8, 32, 32), (4, 16, 16)): "down2", ((8, 8, 8), (4, 16, 16)): "up2",
             ((8, 8, 8), (4, 6, 6)): "kernel", ((8, 4, 4), (4, 16, 16)): "pool_teacher"}
    for (s, t), kind in cases.items():
        reg = ConvReg(s, t)
        out = reg(torch.randn(2, *s))
        target = reg.match_target(torch.randn(2, *t))
        assert reg.kind == kind and out.shape == target.shape
    with pytest.raises(KdlabError, match="hint_layer=7 is out of range"):
        _build("fitnet", "resnet32x4", "resnet8x4", hint_layer=7)


def test_methods_are_registered_with_descriptions():
    from kdlab.methods import describe_method, method_class, method_defaults

    for m in METHODS:
        assert describe_method(m) and method_class(m).paper
        assert "image_size" in method_defaults(m)
    assert method_defaults("fitnet")["weight"] == 100.0 and method_defaults("fitnet")["hint_layer"] == 2
    assert method_defaults("at")["weight"] == 1000.0 and method_defaults("nst")["weight"] == 50.0
    assert method_defaults("ft")["weight"] == 200.0 and method_defaults("ofd")["weight"] == 1e-3


def test_shipped_configs_use_valid_hyper_parameters():
    from kdlab.config import list_configs, load_config
    from kdlab.methods import method_defaults

    names = [n for n in list_configs() if n.split("/")[1] in METHODS]
    for m in METHODS:
        assert f"tiny-imagenet/{m}/resnet32x4_resnet8x4" in names
        assert f"cifar100/{m}/resnet32x4_resnet8x4" in names
    for n in names:
        cfg = load_config(n)
        assert set(cfg.method.params) <= set(method_defaults(cfg.method.name)), n
        if cfg.student.name in ("MobileNetV2", "ShuffleV1", "ShuffleV2"):
            assert cfg.optim.lr == 0.01, n
    assert not any(n.startswith("cifar100/fsp/") and "Shuffle" in n for n in names)


def test_ofd_margins_are_those_of_the_teacher_loaded_from_its_checkpoint(tmp_path):
    from kdlab.experiment import build_model

    torch.manual_seed(0)
    trained = kdlab.create_model("wrn_40_2", num_classes=10)
    bn_path = kdlab.features.get_taps(trained).bn_before_relu[2]
    bn = trained.get_submodule(bn_path)
    with torch.no_grad():  # stand-in for training: BN scales and shifts far from their init
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    torch.save({"model": trained.state_dict()}, tmp_path / "t.pt")
    teacher = build_model("wrn_40_2", 10, {}, str(tmp_path / "t.pt"))
    d = kdlab.create_distiller("ofd", student=kdlab.create_model("wrn_16_2", num_classes=10), teacher=teacher)
    try:
        assert torch.allclose(d.margin2, kdlab.losses.ofd_margin(bn.weight, bn.bias))
        fresh = kdlab.create_model("wrn_40_2", num_classes=10).get_submodule(bn_path)
        assert not torch.allclose(d.margin2, kdlab.losses.ofd_margin(fresh.weight, fresh.bias))
        assert "margin2" in dict(d.named_buffers())  # saved with the method's state, so eval/resume keep it
    finally:
        _release(d)
