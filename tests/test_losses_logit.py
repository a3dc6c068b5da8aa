"""KD and DKD loss values against independent, loop-based computations and hand-checked cases."""

import math

import pytest
import torch

from kdlab import losses


def softmax_list(z, t):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def kd_by_hand(zs, zt, t):
    total = 0.0
    for a, b in zip(zs.tolist(), zt.tolist()):
        p = softmax_list(b, t)
        q = softmax_list(a, t)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(zs) * t * t


def dkd_by_hand(zs, zt, y, alpha, beta, t):
    tckd = nckd = 0.0
    for a, b, g in zip(zs.tolist(), zt.tolist(), y.tolist()):
        ps, pt = softmax_list(a, t), softmax_list(b, t)
        bs, bt = [ps[g], 1 - ps[g]], [pt[g], 1 - pt[g]]
        tckd += sum(u * math.log(u / v) for u, v in zip(bt, bs))
        # non-target distributions: drop the target class and renormalise
        a_nt = [v for i, v in enumerate(a) if i != g]
        b_nt = [v for i, v in enumerate(b) if i != g]
        qs, qt = softmax_list(a_nt, t), softmax_list(b_nt, t)
        nckd += sum(u * math.log(u / v) for u, v in zip(qt, qs))
    n = len(y)
    return (alpha * tckd + beta * nckd) / n * t * t


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_matches_loop(t):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 7, generator=g) * 3, torch.randn(6, 7, generator=g) * 3
    assert losses.kd(zs, zt, t).item() == pytest.approx(kd_by_hand(zs, zt, t), rel=1e-5)


def test_kd_hand_case_two_classes():
    # teacher logits (0, 0) -> p = (1/2, 1/2); student (ln 3, 0) at T=1 -> q = (3/4, 1/4)
    zs = torch.tensor([[math.log(3.0), 0.0]])
    zt = torch.zeros(1, 2)
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert losses.kd(zs, zt, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # at T=2 logits halve: q = softmax(ln3/2, 0) = (sqrt3/(1+sqrt3), 1/(1+sqrt3)), times T^2 = 4
    r = math.sqrt(3.0)
    q = (r / (1 + r), 1 / (1 + r))
    expected2 = 4 * (0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1]))
    assert losses.kd(zs, zt, 2.0).item() == pytest.approx(expected2, rel=1e-6)


def test_kd_zero_for_identical_logits_and_positive_otherwise():
    z = torch.randn(4, 10)
    assert losses.kd(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.kd(z, z.flip(1), 4.0).item() > 0


@pytest.mark.parametrize("alpha,beta,t", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_loop(alpha, beta, t):
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(5, 6, generator=g) * 2, torch.randn(5, 6, generator=g) * 2
    y = torch.tensor([0, 3, 5, 1, 3])
    got = losses.dkd(zs, zt, y, alpha=alpha, beta=beta, temperature=t).item()
    assert got == pytest.approx(dkd_by_hand(zs, zt, y, alpha, beta, t), rel=1e-4)


def test_dkd_parts_sum_to_kd_when_the_target_mass_agrees():
    # KD = TCKD + (1 - p_t,gt) * NCKD (DKD paper eq. 6); when the teacher's and the student's
    # target probabilities agree, TCKD = 0 and KD equals NCKD weighted by the teacher's non-target mass.
    zt = torch.tensor([[2.0, 0.5, -1.0, 0.3]])
    zs = torch.tensor([[2.0, -0.7, 0.9, 0.1]])
    # make student target prob equal to teacher's: shift student target logit to match
    y = torch.tensor([0])
    pt = zt.softmax(1)[0, 0]
    rest = zs[0, 1:].exp().sum()
    zs[0, 0] = torch.log(pt / (1 - pt) * rest)
    tckd = losses.dkd(zs, zt, y, alpha=1.0, beta=0.0, temperature=1.0)
    nckd = losses.dkd(zs, zt, y, alpha=0.0, beta=1.0, temperature=1.0)
    assert tckd.item() == pytest.approx(0.0, abs=1e-6)
    assert losses.kd(zs, zt, 1.0).item() == pytest.approx((1 - pt.item()) * nckd.item(), rel=1e-5)


def test_dkd_finite_when_student_saturates():
    zs = torch.tensor([[80.0, -80.0, -80.0]])
    zt = torch.tensor([[0.0, 0.0, 0.0]])
    out = losses.dkd(zs, zt, torch.tensor([0]), 1.0, 8.0, 1.0)
    assert torch.isfinite(out)


def test_losses_give_gradient_to_student_only():
    zs = torch.randn(3, 5, requires_grad=True)
    zt = torch.randn(3, 5, requires_grad=True)
    (losses.kd(zs, zt.detach(), 4.0) + losses.dkd(zs, zt.detach(), torch.tensor([0, 1, 2]))).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None
