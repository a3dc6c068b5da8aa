"""NKD and USKD losses against loop-based computations and hand-checked cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab import losses
from kdlab.losses.normalized import zipf_non_target_labels


def softmax_list(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def nkd_by_hand(zs, zt, y, t, gamma):
    target = non = 0.0
    for a, b, g in zip(zs.tolist(), zt.tolist(), y.tolist()):
        ps, pt = softmax_list(a), softmax_list(b)
        target += -pt[g] * math.log(ps[g])
        # non-target distributions = the temperature-softened ones renormalised without class g
        ps_t, pt_t = softmax_list(a, t), softmax_list(b, t)
        for k in range(len(a)):
            if k != g:
                non += -(pt_t[k] / (1 - pt_t[g])) * math.log(ps_t[k] / (1 - ps_t[g]))
    return (target + gamma * t * t * non) / len(y)


@pytest.mark.parametrize("t,gamma", [(1.0, 1.5), (3.0, 3.5)])
def test_nkd_matches_loop(t, gamma):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 7, generator=g) * 2, torch.randn(6, 7, generator=g) * 2
    y = torch.tensor([0, 6, 3, 3, 1, 5])
    got = losses.nkd(zs, zt, y, temperature=t, gamma=gamma).item()
    assert got == pytest.approx(nkd_by_hand(zs, zt, y, t, gamma), rel=1e-5)


def test_nkd_with_a_one_hot_like_teacher():
    # teacher (50, 0, 0, 0): t_gt = 1 - O(e^-50), non-target part uniform. Student (c, 0, 0, 0):
    # its non-target part is uniform too, so L_non = gamma*T^2*log(C-1) and L_target = CE.
    c, n_cls, t, gamma = 1.3, 4, 3.0, 3.5
    zt = torch.tensor([[50.0, 0, 0, 0]])
    zs = torch.tensor([[c, 0, 0, 0]])
    ce = -math.log(math.exp(c) / (math.exp(c) + n_cls - 1))
    expected = ce + gamma * t * t * math.log(n_cls - 1)
    assert losses.nkd(zs, zt, torch.tensor([0]), t, gamma).item() == pytest.approx(expected, rel=1e-6)
    # a student whose non-target part disagrees pays more than log(C-1) there
    zs2 = torch.tensor([[c, 3.0, 0, 0]])
    assert losses.nkd(zs2, zt, torch.tensor([0]), t, gamma).item() > expected


def test_nkd_gradient_reaches_the_student_only():
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5, requires_grad=True)
    losses.nkd(zs, zt, torch.tensor([0, 1, 2, 3])).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None


# ---- USKD --------------------------------------------------------------------------------------

def zipf_by_hand(z, w, g, log_rank=True):
    """Non-target Zipf labels for one sample: rank all classes, 1/rank, drop g, renormalise."""
    n_cls = len(z)
    pw = softmax_list(w)
    ps = softmax_list(z)
    f = [math.log(p) for p in ps] if log_rank else ps
    score = [pw[c] / (1 - pw[g] + 1e-6) + f[c] / (1 - f[g] + 1e-6) for c in range(n_cls)]
    order = sorted(range(n_cls), key=lambda c: (-score[c], c))
    weight = {c: 1.0 / (pos + 1) for pos, c in enumerate(order)}
    nt = [weight[c] for c in range(n_cls) if c != g]
    s = sum(nt)
    return [v / s for v in nt]


def uskd_by_hand(z, w, y, alpha, beta, mu, ls=0.1, log_rank=True):
    n = len(y)
    n_cls = z.shape[1]
    p_gt2 = [softmax_list(a)[g] ** 2 for a, g in zip(z.tolist(), y.tolist())]
    mean = sum(p_gt2) / n
    l_t = l_non = l_weak = 0.0
    for i, (a, b, g) in enumerate(zip(z.tolist(), w.tolist(), y.tolist())):
        ps, pw = softmax_list(a), softmax_list(b)
        l_t += -(p_gt2[i] + 1 - mean) * math.log(ps[g])
        for c in range(n_cls):
            label = (1 - ls) * (c == g) + ls / n_cls
            l_weak += -label * math.log(pw[c])
        zipf = zipf_by_hand(a, b, g, log_rank)
        q = softmax_list([v for k, v in enumerate(a) if k != g])
        l_non += -sum(u * math.log(v) for u, v in zip(zipf, q))
    return alpha * l_t / n + beta * l_non / n + mu * l_weak / n


@pytest.mark.parametrize("log_rank", [True, False])
def test_uskd_matches_loop(log_rank):
    g = torch.Generator().manual_seed(1)
    z, w = torch.randn(5, 6, generator=g) * 2, torch.randn(5, 6, generator=g) * 2
    y = torch.tensor([0, 5, 2, 2, 4])
    got = losses.uskd(z, w, y, alpha=0.7, beta=0.3, mu=0.2, rank_on_log_softmax=log_rank).item()
    assert got == pytest.approx(uskd_by_hand(z, w, y, 0.7, 0.3, 0.2, log_rank=log_rank), rel=1e-5)
    parts = losses.uskd_parts(z, w, y, rank_on_log_softmax=log_rank)
    total = 0.7 * parts[0] + 0.3 * parts[1] + 0.2 * parts[2]
    assert total.item() == pytest.approx(got, rel=1e-6)


def test_uskd_hand_case_uniform_outputs():
    # z = w = 0 with C = 3: p_gt = 1/3 for every sample, so q = 1 and L_t = log 3; the weak head is
    # uniform so L_weak = log 3; the non-target student distribution is uniform so L_non = log 2.
    z = torch.zeros(2, 3)
    l_t, l_non, l_weak = losses.uskd_parts(z, torch.zeros(2, 3), torch.tensor([0, 2]))
    assert l_t.item() == pytest.approx(math.log(3), rel=1e-6)
    assert l_weak.item() == pytest.approx(math.log(3), rel=1e-6)
    assert l_non.item() == pytest.approx(math.log(2), rel=1e-6)


def test_uskd_target_label_is_batch_centred():
    # p_gt = (0.9, 0.5): q = p^2 + 1 - mean(p^2) = (1.28, 0.72)
    z = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    l_t, _, _ = losses.uskd_parts(z, torch.zeros(2, 2), y)
    expected = -(1.28 * math.log(0.9) + 0.72 * math.log(0.5)) / 2
    assert l_t.item() == pytest.approx(expected, rel=1e-5)


def test_zipf_ranking_reproduces_the_log_softmax_quirk():
    # z = (5, 0, 1), w = (0, 2, 0), gt 0. Weak-head term favours class 1 by tanh(1) = 0.76; the
    # student term favours class 2 by 0.46 with softmax scores but by ~0.98 with log-softmax scores.
    # Log (as implemented): ranks 0 > 2 > 1 -> non-target (1/3, 1/2) -> (0.4, 0.6).
    # Softmax (paper reading): ranks 0 > 1 > 2 -> non-target (1/2, 1/3) -> (0.6, 0.4).
    z, w, y = torch.tensor([[5.0, 0.0, 1.0]]), torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([0])
    log_rank = zipf_non_target_labels(z, w, y, rank_on_log_softmax=True)
    prob_rank = zipf_non_target_labels(z, w, y, rank_on_log_softmax=False)
    assert torch.allclose(log_rank, torch.tensor([[0.4, 0.6]]))
    assert torch.allclose(prob_rank, torch.tensor([[0.6, 0.4]]))
    q = softmax_list([0.0, 1.0])
    _, l_non, _ = losses.uskd_parts(z, w, y)
    assert l_non.item() == pytest.approx(-(0.4 * math.log(q[0]) + 0.6 * math.log(q[1])), rel=1e-6)


def test_uskd_label_smoothing_matches_torch_cross_entropy():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 5, generator=g)
    y = torch.tensor([1, 0, 4, 2])
    _, _, l_weak = losses.uskd_parts(torch.randn(4, 5, generator=g), w, y)
    assert l_weak.item() == pytest.approx(F.cross_entropy(w, y, label_smoothing=0.1).item(), rel=1e-6)


def test_uskd_soft_labels_carry_no_gradient():
    z = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 1, 3])
    _, l_non, _ = losses.uskd_parts(z, w, y)
    l_non.backward()
    assert w.grad is None, "the Zipf labels must be detached from the weak head"
    assert z.grad is not None
