"""CompKD (``comparative``): the loss against loops, the method on tuple batches, cached teacher logits."""

import pytest
import torch

import kdlab
from kdlab import losses
from kdlab.data import TensorImageSet
from kdlab.data.batch import Batch
from kdlab.data.tuples import TupleLoader
from kdlab.errors import KdlabError

C = 5



def _loop_reference(zs, zt, y, pos, mode="ckd", lam=0.5):
    """Per tuple, with plain loops: group means, their combination, squared errors; mean over B·C."""
    b, k, c = zs.shape
    se_cls = se_rel = 0.0
    for i in range(b):
        def combine(rows):
            p = [sum(rows[j][m] for j in range(pos)) / pos for m in range(c)]
            q = [sum(rows[j][m] for j in range(pos, k)) / (k - pos) for m in range(c)]
            if mode == "ckd":
                return [p[m] - q[m] for m in range(c)]
            if mode == "ckd_add":
                return [0.5 * p[m] + 0.5 * q[m] for m in range(c)]
            return [lam * p[m] + (1 - lam) * q[m] for m in range(c)]
        ds = combine(zs[i].tolist())
        dt = combine(zt[i].tolist())
        dy = combine([[1.0 if m == int(y[i, j]) else 0.0 for m in range(c)] for j in range(k)])
        se_cls += sum((ds[m] - dy[m]) ** 2 for m in range(c))
        se_rel += sum((ds[m] - dt[m]) ** 2 for m in range(c))
    return se_cls / (b * c), se_rel / (b * c)


@pytest.mark.parametrize("k,pos", [(3, 2), (2, 1)])
@pytest.mark.parametrize("mode,lam", [("ckd", 0.5), ("ckd_add", 0.5), ("ckd_mixup", 0.3)])
def test_loss_equals_loops(k, pos, mode, lam):
    g = torch.Generator().manual_seed(k)
    zs, zt = torch.randn(4, k, C, generator=g), torch.randn(4, k, C, generator=g)
    y = torch.randint(0, C, (4, k), generator=g)
    out = losses.comparative(zs, zt, y, pos, mode=mode, lam=lam)
    cls, rel = _loop_reference(zs, zt, y, pos, mode, lam)
    assert out["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert out["rel"].item() == pytest.approx(rel, rel=1e-5)
    d_s = losses.combine_groups(zs, pos, mode, lam)
    assert out["kd"].item() == pytest.approx(losses.kd(d_s, losses.combine_groups(zt, pos, mode, lam)).item())


def _nets():
    torch.manual_seed(0)
    return kdlab.create_model("resnet8", num_classes=C), kdlab.create_model("resnet8", num_classes=C)


def _tuple_batch(pos_and_neg=3):
    g = torch.Generator().manual_seed(1)
    images = TensorImageSet(torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8),
                            torch.arange(12) % C)
    loader = TupleLoader(images, pos_and_neg=pos_and_neg, max_tuples=40, batch_size=4, seed=0,
                         mean=(0.5,) * 3, std=(0.25,) * 3)
    return next(iter(loader))


@pytest.mark.parametrize("split_forward", [True, False])
def test_method_matches_an_independent_computation(split_forward):
    teacher, student = _nets()
    d = kdlab.create_distiller("comparative", student=student, teacher=teacher, w_rel=2.0, w_kd=0.5,
                               split_forward=split_forward).train()
    batch = _tuple_batch()
    logits, terms = d(batch)
    assert set(terms) == {"cls", "rel", "kd"}
    x = batch.image.view(4, 3, 3, 16, 16)
    with torch.no_grad():
        if split_forward:  # positives and negatives in two passes (CompKD: BN statistics per group)
            zp = student(x[:, :2].reshape(8, 3, 16, 16)).view(4, 2, C)
            zn = student(x[:, 2:].reshape(4, 3, 16, 16)).view(4, 1, C)
            zs = torch.cat([zp, zn], 1)
        else:
            zs = student(batch.image).view(4, 3, C)
        zt = teacher.eval()(batch.image).view(4, 3, C)
    assert torch.allclose(logits.detach(), zs.reshape(12, C), atol=1e-5)
    cls, rel = _loop_reference(zs, zt, batch.target.view(4, 3), 2)
    assert terms["cls"].item() == pytest.approx(cls, rel=1e-4)
    assert terms["rel"].item() == pytest.approx(2.0 * rel, rel=1e-4)
    kd = losses.kd(losses.combine_groups(zs, 2), losses.combine_groups(zt, 2))
    assert terms["kd"].item() == pytest.approx(0.5 * kd.item(), rel=1e-4)


def test_cached_teacher_logits_replace_the_teacher():
    teacher, student = _nets()
    d = kdlab.create_distiller("comparative", student=student, teacher=teacher).train()
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(1))
    batch = _tuple_batch(pos_and_neg=2)
    cached = torch.randn(8, C)
    batch.extra["teacher_logits"] = cached
    _, terms = d(batch)
    assert not calls and set(terms) == {"cls", "rel"}
    with torch.no_grad():
        zs = torch.cat([student(batch.image.view(4, 2, 3, 16, 16)[:, :1].reshape(4, 3, 16, 16)).view(4, 1, C),
                        student(batch.image.view(4, 2, 3, 16, 16)[:, 1:].reshape(4, 3, 16, 16)).view(4, 1, C)], 1)
    _, rel = _loop_reference(zs, cached.view(4, 2, C), batch.target.view(4, 2), 1)
    assert terms["rel"].item() == pytest.approx(rel, rel=1e-4)


def test_class_attributes_and_errors():
    cls = kdlab.methods.method_class("comparative")
    assert cls.loader_kind == "tuples" and cls.needs_index
    teacher, student = _nets()
    d = kdlab.create_distiller("comparative", student=student, teacher=teacher, pos_and_neg=2, max_rel_samples=9)
    assert d.loader_options == {"pos_and_neg": 2, "max_tuples": 9}
    with pytest.raises(KdlabError, match="tuple loader"):
        d(Batch(torch.randn(4, 3, 16, 16), torch.zeros(4, dtype=torch.long)))
    for bad in ({"pos_and_neg": 4}, {"mode": "sub"}, {"loss_fn": "l1"}):
        with pytest.raises(KdlabError):
            kdlab.create_distiller("comparative", student=student, teacher=teacher, **bad)


def test_mixup_mode_draws_lambda_from_torch_rng():
    teacher, student = _nets()
    d = kdlab.create_distiller("comparative", student=student, teacher=teacher, mode="ckd_mixup").train()
    batch = _tuple_batch()
    torch.manual_seed(3)
    _, t1 = d(batch)
    lam1 = d.last_lam
    torch.manual_seed(3)
    _, t2 = d(batch)
    assert 0 < lam1 < 1 and d.last_lam == lam1 and t1["cls"].item() == t2["cls"].item()
