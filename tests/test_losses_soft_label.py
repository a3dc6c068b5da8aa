"""WSLD loss against a loop-based computation and its limiting cases."""

import math

import pytest
import torch

from kdlab import losses


def softmax_list(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def wsld_by_hand(zs, zt, y, t, alpha):
    total = 0.0
    for a, b, g in zip(zs.tolist(), zt.tolist(), y.tolist()):
        ce_s = -math.log(softmax_list(a)[g])
        ce_t = -math.log(softmax_list(b)[g])
        w = 1 - math.exp(-max(ce_s / (ce_t + 1e-7), 0.0))
        pt, ps = softmax_list(b, t), softmax_list(a, t)
        total += w * -sum(u * math.log(v) for u, v in zip(pt, ps))
    return alpha * t * t * total / len(y)


@pytest.mark.parametrize("t,alpha", [(4.0, 2.25), (2.0, 2.5)])
def test_wsld_matches_loop(t, alpha):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    y = torch.tensor([0, 4, 1, 1, 3, 2])
    got = losses.wsld(zs, zt, y, t, alpha).item()
    assert got == pytest.approx(wsld_by_hand(zs, zt, y, t, alpha), rel=1e-5)


def test_wsld_one_hot_teacher_gives_full_weight_hard_label_ce():
    # teacher CE = 0 -> ratio huge -> w = 1; its T-softened labels are one-hot too (1000/T = 250),
    # so the loss is alpha*T^2*mean(-log softmax(z_s/T)_gt).
    t, alpha = 4.0, 2.25
    zs = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    zt = torch.full((2, 3), 0.0).scatter_(1, y.view(-1, 1), 1000.0)
    expected = sum(-math.log(softmax_list(a, t)[g]) for a, g in zip(zs.tolist(), y.tolist())) / 2
    assert losses.wsld(zs, zt, y, t, alpha).item() == pytest.approx(alpha * t * t * expected, rel=1e-6)


def test_wsld_student_equal_to_teacher_weighs_by_one_minus_inv_e():
    # ratio 1 -> w = 1 - 1/e; soft CE = entropy of softmax(z/T)
    t = 4.0
    z = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    p = softmax_list(z[0].tolist(), t)
    entropy = -sum(v * math.log(v) for v in p)
    got = losses.wsld(z, z.clone(), torch.tensor([2]), t, alpha=1.0).item()
    assert got == pytest.approx((1 - math.exp(-1)) * t * t * entropy, rel=1e-5)


def test_wsld_nearly_vanishes_when_the_student_already_fits_far_better():
    zs = torch.tensor([[30.0, 0.0, 0.0]])  # CE_s ~ 2e-13
    zt = torch.tensor([[0.0, 0.0, 0.0]])  # CE_t = log 3
    assert losses.wsld(zs, zt, torch.tensor([0])).item() < 1e-9


def test_wsld_gradient_reaches_the_student_only():
    zs = torch.randn(3, 4, requires_grad=True)
    zt = torch.randn(3, 4, requires_grad=True)
    losses.wsld(zs, zt, torch.tensor([0, 3, 1])).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None
