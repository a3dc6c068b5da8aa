"""The distiller contract with KD, DKD and CE: values, gradients, teacher isolation, errors."""

import pytest
import torch
import torch.nn.functional as F

import kdlab
from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return kdlab.create_model("resnet20", num_classes=10), kdlab.create_model("resnet8", num_classes=10)


def _inputs(n=8, size=16):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_kd_terms_equal_weighted_losses(pair):
    teacher, student = pair
    d = kdlab.create_distiller("kd", student=student, teacher=teacher, temperature=3.0, ce_weight=0.2,
                               kd_weight=0.7)
    d.train()
    x, y = _inputs()
    logits, terms = d(x, y, epoch=1)
    assert set(terms) == {"ce", "kd"}
    with torch.no_grad():
        zs, zt = student(x), teacher.eval()(x)
    # student is in train mode inside the distiller: recompute in the same mode
    student.train()
    assert torch.allclose(logits, student(x), atol=1e-5)
    assert terms["ce"].item() == pytest.approx(0.2 * F.cross_entropy(logits, y).item(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.7 * losses.kd(logits, zt, 3.0).item(), rel=1e-5)
    del zs


def test_gradients_reach_the_student_only_and_teacher_stays_frozen(pair):
    teacher, student = pair
    d = kdlab.create_distiller("dkd", student=student, teacher=teacher, warmup_epochs=1)
    d.train()
    assert not teacher.training, "teacher must stay in eval mode while the distiller trains"
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.5)
    x, y = _inputs()
    student.zero_grad()
    _, terms = d(x, y, epoch=3)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    opt.step()
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher weights or BN stats changed"
    ids = {id(p) for p in d.trainable_parameters()}
    assert not ids & {id(p) for p in teacher.parameters()}
    assert not any(k.startswith("teacher.") for k in d.state_dict_without_teacher())


def test_dkd_warmup_ramps_linearly_with_one_indexed_epochs(pair):
    teacher, student = pair
    d = kdlab.create_distiller("dkd", student=student, teacher=teacher, warmup_epochs=20).eval()
    x, y = _inputs()
    with torch.no_grad():
        full = d(x, y, epoch=20)[1]["dkd"]
        first = d(x, y, epoch=1)[1]["dkd"]
        late = d(x, y, epoch=100)[1]["dkd"]
    assert first.item() == pytest.approx(full.item() / 20, rel=1e-5)
    assert late.item() == pytest.approx(full.item(), rel=1e-6)


def test_cached_teacher_logits_skip_the_teacher_forward(pair):
    teacher, student = pair
    calls = []
    h = teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        d = kdlab.create_distiller("kd", student=student, teacher=teacher).train()
        x, y = _inputs()
        cached = torch.randn(8, 10)
        _, terms = d(Batch(x, y, extra={"teacher_logits": cached}))
        assert not calls
        student.train()
        with torch.no_grad():
            zs = student(x)
        assert terms["kd"].item() == pytest.approx(0.9 * losses.kd(zs, cached, 4.0).item(), rel=1e-4)
        d(x, y)
        assert len(calls) == 1
    finally:
        h.remove()


def test_ce_method_needs_no_teacher(pair):
    _, student = pair
    d = kdlab.create_distiller("ce", student=student)
    x, y = _inputs()
    logits, terms = d(x, y)
    assert set(terms) == {"ce"} and d.extra_parameters() == 0
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_bad_method_inputs_give_one_clear_error(pair):
    teacher, student = pair
    with pytest.raises(KdlabError, match=r"unknown method 'dkdd'; did you mean 'dkd'"):
        kdlab.create_distiller("dkdd", student=student, teacher=teacher)
    with pytest.raises(KdlabError, match=r"has no hyper-parameter 'temprature'; did you mean 'temperature'"):
        kdlab.create_distiller("kd", student=student, teacher=teacher, temprature=2)
    with pytest.raises(KdlabError, match="needs a teacher"):
        kdlab.create_distiller("kd", student=student)


def test_methods_are_listed_with_descriptions():
    from kdlab.methods import describe_method

    assert {"ce", "kd", "dkd"} <= set(kdlab.list_methods())
    assert describe_method("dkd").startswith("Decoupled KD")
