"""Logit methods: teacher isolation where no other test covers it, detached weights, CompKD by hand,
and `kdlab list methods`.

Already covered elsewhere, so not repeated here: one SGD step leaves the teacher untouched, with
gradients in the student only and the teacher in eval mode after ``train()``, for dkd
(test_methods_contract.py), nkd, wsld, dist, ckd (test_methods_logit_teacher.py) and mixup
(test_methods_logit_mixing.py); uskd drops a given teacher (test_methods_logit_uskd.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import kdlab
from kdlab import losses
from kdlab.cli import main
from kdlab.data.batch import Batch
from kdlab.features import Features
from kdlab.losses.normalized import zipf_non_target_labels
from kdlab.methods import describe_method, list_methods, method_class

C = 10


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return kdlab.create_model("resnet14", num_classes=C), kdlab.create_model("resnet8", num_classes=C)


def _batch(method, n=6):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, C, (n,), generator=g)
    extra = {"tuple_split": torch.tensor([2, 1])} if method == "comparative" else {}  # 2 tuples of 2 + 1
    return Batch(x, y, extra=extra)


def _watch_teacher(teacher):
    """Forward hook recording the teacher's mode at each call (a method could switch it inside forward)."""
    modes = []
    return modes, teacher.register_forward_hook(lambda m, i, o: modes.append(m.training))


@pytest.mark.parametrize("method", ["comparative", "mixup3", "cutmix"])
def test_one_step_trains_the_student_only_and_leaves_the_teacher_frozen(pair, method):
    teacher, student = pair
    d = kdlab.create_distiller(method, student=student, teacher=teacher).eval().train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in student.parameters()]
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    assert not {id(p) for p in d.trainable_parameters()} & {id(p) for p in teacher.parameters()}
    modes, hook = _watch_teacher(teacher)
    try:
        opt.zero_grad()
        _, terms = d(_batch(method))
        sum(terms.values()).backward()
    finally:
        hook.remove()
    assert modes == [False], "the teacher ran once, in eval mode"
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    opt.step()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN stats changed"
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters()))
    assert not teacher.training


@pytest.mark.parametrize("method", ["mixup", "nkd", "wsld", "dist", "ckd"])
def test_the_teacher_runs_in_eval_mode_inside_a_training_forward(pair, method):
    """The other tests check ``teacher.training`` between calls; this checks it during the forward."""
    teacher, student = pair
    d = kdlab.create_distiller(method, student=student, teacher=teacher)
    teacher.train()  # even a teacher handed over in train mode
    d.train()
    modes, hook = _watch_teacher(teacher)
    try:
        d(_batch(method))
        d.eval().train()
        d(_batch(method))
    finally:
        hook.remove()
    assert modes == [False, False]


def test_uskd_never_runs_or_updates_a_teacher_it_is_given(pair):
    teacher, student = pair
    d = kdlab.create_distiller("uskd", student=student, teacher=teacher).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    modes, hook = _watch_teacher(teacher)
    try:
        sum(d(_batch("uskd"))[1].values()).backward()
    finally:
        hook.remove()
    assert modes == [] and all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], teacher.state_dict()[k]) for k in before)


def _logits(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    zs = (2 * torch.randn(n, C, generator=g, dtype=torch.float64)).requires_grad_()
    return zs, 2 * torch.randn(n, C, generator=g, dtype=torch.float64), torch.randint(0, C, (n,), generator=g)


def _assert_detached_like_reference(loss, x, reference, what):
    """``loss`` equals ``reference(False)`` (its weight computed without gradient) in value and in
    gradient wrt ``x``, and ``reference(True)`` (a weight with gradient) would give another gradient."""
    (g,) = torch.autograd.grad(loss, x)
    ref = reference(False)
    (g_ref,) = torch.autograd.grad(ref, x)
    (g_live,) = torch.autograd.grad(reference(True), x)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(g.double(), g_ref, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(g_live, g_ref, rtol=1e-2, atol=1e-4), f"{what} with gradient would differ"


def test_wsld_sample_weight_is_detached():
    zs, zt, y = _logits()
    t, alpha = 4.0, 2.25

    def reference(weight_grad):
        soft_ce = -(F.softmax(zt / t, dim=1) * F.log_softmax(zs / t, dim=1)).sum(dim=1)
        with torch.set_grad_enabled(weight_grad):
            w = 1 - torch.exp(-(F.cross_entropy(zs, y, reduction="none")
                                / (F.cross_entropy(zt, y, reduction="none") + 1e-7)).clamp_min(0))
        return alpha * t * t * (w * soft_ce).mean()

    _assert_detached_like_reference(losses.wsld(zs, zt, y, t, alpha), zs, reference, "a weight")


def test_uskd_target_soft_label_q_is_detached():
    zs, _, y = _logits(seed=1)
    aux = torch.randn(zs.shape, dtype=torch.float64)

    def reference(q_grad):
        log_p_gt = F.log_softmax(zs, dim=1).gather(1, y[:, None]).squeeze(1)
        with torch.set_grad_enabled(q_grad):
            p_gt2 = F.softmax(zs, dim=1).gather(1, y[:, None]).squeeze(1) ** 2
            q = p_gt2 + 1 - p_gt2.mean()
        return -(q * log_p_gt).mean()

    _assert_detached_like_reference(losses.uskd_parts(zs, aux, y)[0], zs, reference, "a q")
    assert not zipf_non_target_labels(zs, aux, y).requires_grad  # the non-target labels too


def test_comparative_with_the_student_as_its_own_teacher_has_zero_rel_loss(pair):
    torch.manual_seed(0)  # fresh weights: earlier tests train the shared fixture's student in place
    student = kdlab.create_model("resnet8", num_classes=C)
    same = kdlab.create_distiller("comparative", student=student, teacher=copy.deepcopy(student), w_kd=1.0)
    batch = _batch("comparative")
    with torch.no_grad():
        _, terms = same.eval()(batch)  # eval: both networks use the same running statistics
    assert terms["rel"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["cls"].item() > 0.01
    other, _ = pair
    with torch.no_grad():
        _, terms = kdlab.create_distiller("comparative", student=student, teacher=other).eval()(batch)
    assert terms["rel"].item() > 1e-4  # a different teacher: nonzero


def test_comparative_by_hand():
    """Two 2-vs-1 tuples, 2 classes. Δ = mean(positives) − mean(negatives), per tuple:

    tuple 1: z_s = [1,0],[3,2] | [0,1] -> Δs = [2,1]−[0,1] = [2,0]
             z_t = [2,0],[0,2] | [1,1] -> Δt = [1,1]−[1,1] = [0,0]
             y   = 0, 0 | 1            -> Δy = [1,0]−[0,1] = [1,−1]
    tuple 2: z_s = [0,0],[2,2] | [1,−1] -> Δs = [1,1]−[1,−1] = [0,2]
             z_t = [1,1],[1,1] | [0,0]  -> Δt = [1,1]
             y   = 1, 0 | 0             -> Δy = [.5,.5]−[1,0] = [−.5,.5]
    cls = MSE(Δs, Δy) = ((2−1)² + (0+1)² + (0+.5)² + (2−.5)²) / 4 = (1 + 1 + .25 + 2.25) / 4 = 1.125
    rel = MSE(Δs, Δt) = ((2−0)² + 0² + (0−1)² + (2−1)²) / 4 = 6 / 4 = 1.5; with w_rel 2: 3.0
    """
    zs = torch.tensor([[1., 0], [3, 2], [0, 1], [0, 0], [2, 2], [1, -1]])
    zt = torch.tensor([[2., 0], [0, 2], [1, 1], [1, 1], [1, 1], [0, 0]])
    y = torch.tensor([0, 0, 1, 1, 0, 0])
    s, t = kdlab.create_model("resnet8", num_classes=2), kdlab.create_model("resnet8", num_classes=2)
    d = kdlab.create_distiller("comparative", student=s, teacher=t, w_rel=2.0)
    batch = Batch(torch.zeros(6, 3, 1, 1), y, extra={"tuple_split": torch.tensor([2, 1])})
    terms = d.losses(Features(logits=zs), Features(logits=zt), batch)
    assert set(terms) == {"cls", "rel"}
    assert terms["cls"].item() == pytest.approx(1.125, abs=1e-6)
    assert terms["rel"].item() == pytest.approx(3.0, abs=1e-6)


def test_list_methods_shows_every_registered_method_with_its_paper(capsys):
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["method", "what", "it", "does", "paper"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert len(lines) - 2 == len(rows) == len(list_methods())
    for name in list_methods():
        paper = method_class(name).paper
        assert paper, f"{name} is registered without a paper"
        assert paper in rows[name] and describe_method(name) in rows[name], name
    for name, needle in [("comparative", "Comparative Knowledge Distillation"), ("mixup", "Zhang et al., mixup"),
                         ("cutmix", "Yun et al."), ("wsld", "Zhou et al."), ("dist", "Huang et al."),
                         ("nkd", "Yang et al."), ("uskd", "Yang et al."), ("ckd", "Sample-wise")]:
        assert needle in rows[name], name
