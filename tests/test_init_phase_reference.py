"""The AB/FSP init phase as RepDistiller's ``helper/pretrain.py`` (issue 12, item 7).

The reference puts the student in eval mode, then its ``get_feat_modules()`` (and AB's connector)
back in train mode, and optimises only those. On a WRN student the final BN is outside the
feature modules, yet AB taps its output as the deepest pre-activation: in the init phase it
normalises with its running statistics and neither they nor its weights move.
``init_modules="all_but_classifier"`` restores kdlab's earlier behaviour.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_engine_trainer import NUM_CLASSES, FakeLoader, make_cfg, run

import kdlab
from kdlab.errors import KdlabError
from kdlab.methods.modules.feature_modules import feature_module_names

pytestmark = pytest.mark.usefixtures("no_fsync")


def wrn_pair(method: str, mode: str | None = None, init_epochs: int = 1):
    torch.manual_seed(0)
    s = kdlab.create_model("wrn_16_2", num_classes=NUM_CLASSES)
    t = kdlab.create_model("wrn_16_2", num_classes=NUM_CLASSES)  # another init: a teacher of the same shape
    with torch.no_grad():  # a final BN whose running statistics and affine are far from the identity
        s.bn1.running_mean.uniform_(-1, 1)
        s.bn1.running_var.uniform_(0.5, 2.0)
        s.bn1.weight.uniform_(0.5, 1.5)
        s.bn1.bias.uniform_(-0.5, 0.5)
    kw = {} if mode is None else {"init_modules": mode}
    lr = 0.05 if method == "ab" else 1e-9  # FSP's Gram matrices of untrained nets are huge
    return kdlab.create_distiller(method, student=s, teacher=t, init_epochs=init_epochs, init_lr=lr, image_size=8,
                                  **kw)


def ab_by_hand(student, teacher, x, final_bn_batch_stats: bool) -> float:
    """AB's init loss written out: WRN pre-activations = the next BN applied to a group's output."""
    s = copy.deepcopy(student).train()  # feature modules in train mode (batch statistics)
    t = teacher.eval()

    def bn(m, h, batch_stats):
        return F.batch_norm(h, None if batch_stats else m.running_mean, None if batch_stats else m.running_var,
                            m.weight, m.bias, training=batch_stats, eps=m.eps)

    with torch.no_grad():
        g1 = s.block1(s.conv1(x))
        g2 = s.block2(g1)
        g3 = s.block3(g2)
        src = [bn(s.block2.layer[0].bn1, g1, True), bn(s.block3.layer[0].bn1, g2, True),
               bn(s.bn1, g3, final_bn_batch_stats)]
        h1 = t.block1(t.conv1(x))
        h2 = t.block2(h1)
        h3 = t.block3(h2)
        tgt = [bn(t.block2.layer[0].bn1, h1, False), bn(t.block3.layer[0].bn1, h2, False), bn(t.bn1, h3, False)]
    total = 0.0
    for k, (a, b) in enumerate(zip(src, tgt)):  # margin 1; stage weights 1/4, 1/2, 1
        term = ((a + 1) ** 2 * ((a > -1) & (b <= 0)) + (a - 1) ** 2 * ((a <= 1) & (b > 0))).sum()
        total += 2.0 ** (k - 2) * float(term)
    return 3e-3 * total / x.shape[0]


def init_loss(d, x) -> float:
    d.phase = "init"
    d.train()
    with torch.no_grad():
        _, terms = d(x, torch.zeros(x.shape[0], dtype=torch.long))
    d.phase = "main"
    return float(terms["ab"])


def test_ab_init_loss_on_a_wrn_student_uses_the_final_bn_in_eval_mode():
    x = FakeLoader().images[:8]
    d = wrn_pair("ab")
    assert d.init_modules == "features" and all(isinstance(c, torch.nn.Identity) for c in d.connectors)
    want = ab_by_hand(d.student, d.teacher, x, final_bn_batch_stats=False)
    old = ab_by_hand(d.student, d.teacher, x, final_bn_batch_stats=True)
    assert abs(want - old) > 0.05 * abs(want)  # the two modes really differ on this student
    assert init_loss(d, x) == pytest.approx(want, rel=1e-5)

    d = wrn_pair("ab", "all_but_classifier")
    assert init_loss(d, x) == pytest.approx(old, rel=1e-5)


def test_init_modes_follow_the_reference_and_the_main_phase_trains_everything():
    d = wrn_pair("ab")
    d.phase = "init"
    d.train()
    s = d.student
    assert not s.training and not s.bn1.training and not s.fc.training
    assert all(m.training for n in ("conv1", "block1", "block2", "block3") for m in s.get_submodule(n).modules())
    assert d.connectors.training and not d.teacher.training
    d.phase = "main"
    d.train()
    assert all(m.training for m in s.modules()) and not d.teacher.training


@pytest.mark.parametrize("method", ["ab", "fsp"])
def test_what_the_init_phase_optimises(method):
    d = wrn_pair(method)
    ids = {id(p) for p in d.init_parameters()}
    names = {n for n, p in d.student.named_parameters() if id(p) in ids}
    every = {n for n, _ in d.student.named_parameters()}
    assert names == {n for n in every if not n.startswith(("bn1.", "fc."))}
    d = wrn_pair(method, "all_but_classifier")
    ids = {id(p) for p in d.init_parameters()}
    assert {n for n, p in d.student.named_parameters() if id(p) in ids} == {n for n in every if not n.startswith("fc.")}


@pytest.mark.parametrize("method", ["ab", "fsp"])
def test_the_init_phase_leaves_the_final_bn_alone_by_default(tmp_path, method):
    cfg = make_cfg()
    cfg.schedule.epochs, cfg.schedule.warmup_epochs = 0, 0  # the init phase only
    after = {}
    for mode in ("features", "all_but_classifier"):
        d = wrn_pair(method, mode)
        before = {k: v.clone() for k, v in d.student.state_dict().items()}
        run(tmp_path, f"{method}-{mode}", cfg, d, test=False)
        after[mode] = {k: not torch.equal(v, before[k]) for k, v in d.student.state_dict().items()}
    moved = after["features"]
    assert not any(moved[k] for k in moved if k.startswith(("bn1.", "fc."))), "final BN or classifier moved"
    assert moved["conv1.weight"] and moved["block1.layer.0.bn1.running_mean"]
    assert moved["block3.layer.1.conv2.weight"]
    old = after["all_but_classifier"]  # kdlab's earlier init phase: the final BN trains on batch statistics
    assert old["bn1.running_mean"] and old["bn1.running_var"] and old["bn1.num_batches_tracked"]
    assert old["bn1.weight"] == (method == "ab")  # FSP's loss does not reach it (stages end before it)
    assert not any(old[k] for k in old if k.startswith("fc."))


@pytest.mark.parametrize("model,expected", [
    # RepDistiller's get_feat_modules() of the same architectures
    ("resnet8", ("bn1", "conv1", "layer1", "layer2", "layer3", "relu")),
    ("wrn_16_2", ("block1", "block2", "block3", "conv1")),
    ("MobileNetV2", ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "conv1")),
    ("ShuffleV2", ("bn1", "conv1", "layer1", "layer2", "layer3", "relu")),  # not conv2/bn2
])
def test_feature_modules_are_those_of_the_reference(model, expected):
    net = kdlab.create_model(model, num_classes=NUM_CLASSES)
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    assert feature_module_names(net, 32) == expected
    assert all(torch.equal(v, stats[k]) for k, v in net.state_dict().items())  # the probe moves nothing
    assert net.training


def test_a_bad_init_modules_value_is_one_line():
    with pytest.raises(KdlabError, match=r"^ab: init_modules must be 'features' .* got 'frozen'$"):
        wrn_pair("ab", "frozen")


def test_an_ab_part_of_compose_gets_the_same_init_modes(tmp_path):
    torch.manual_seed(0)
    s = kdlab.create_model("wrn_16_2", num_classes=NUM_CLASSES)
    t = kdlab.create_model("wrn_16_2", num_classes=NUM_CLASSES)
    d = kdlab.create_distiller("compose", student=s, teacher=t, image_size=8, terms=[
        {"method": "ab", "params": {"init_epochs": 1, "init_lr": 0.05}}, {"method": "kd"}])
    before = {k: v.clone() for k, v in s.state_dict().items()}
    cfg = make_cfg()
    cfg.schedule.epochs, cfg.schedule.warmup_epochs = 0, 0
    run(tmp_path, "compose-ab", cfg, d, test=False)
    moved = {k for k, v in s.state_dict().items() if not torch.equal(v, before[k])}
    assert "conv1.weight" in moved and not any(k.startswith(("bn1.", "fc.")) for k in moved)
    assert all(p.phase == "main" for p in d.parts.values())
