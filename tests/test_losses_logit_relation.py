"""DIST and CKD-SW losses against loop-based computations, hand cases and limits."""

import math

import pytest
import torch

from kdlab import losses


def softmax_list(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def pearson_list(a, b, eps=1e-8):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ca, cb = [v - ma for v in a], [v - mb for v in b]
    num = sum(x * y for x, y in zip(ca, cb))
    return num / (math.sqrt(sum(x * x for x in ca)) * math.sqrt(sum(y * y for y in cb)) + eps)


def dist_by_hand(zs, zt, beta, gamma, t):
    ys = [softmax_list(r, t) for r in zs.tolist()]
    yt = [softmax_list(r, t) for r in zt.tolist()]
    n, c = len(ys), len(ys[0])
    inter = 1 - sum(pearson_list(ys[i], yt[i]) for i in range(n)) / n
    col = lambda m, k: [m[i][k] for i in range(n)]  # noqa: E731
    intra = 1 - sum(pearson_list(col(ys, k), col(yt, k)) for k in range(c)) / c
    return t * t * (beta * inter + gamma * intra)


@pytest.mark.parametrize("beta,gamma,t", [(1.0, 1.0, 4.0), (2.0, 0.5, 1.0)])
def test_dist_matches_loop(beta, gamma, t):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    got = losses.dist(zs, zt, beta, gamma, t).item()
    assert got == pytest.approx(dist_by_hand(zs, zt, beta, gamma, t), rel=1e-5)


def test_dist_is_zero_for_identical_logits():
    z = torch.randn(8, 10) * 2
    assert losses.dist(z, z.clone()).item() == pytest.approx(0.0, abs=1e-4)


def test_dist_hand_case_reversed_two_by_two():
    # Two samples, two classes, the teacher's ranking reversed in every row and column: each
    # Pearson correlation is -1, so inter = intra = 2 and the loss is t^2 * (2 beta + 2 gamma).
    zs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zt = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert losses.dist(zs, zt, 1.0, 0.5, 4.0).item() == pytest.approx(16 * (2 + 1), rel=1e-5)
    # same ranking (different scale): every correlation is +1 -> 0
    assert losses.dist(zs, 3 * zs, 1.0, 1.0, 4.0).item() == pytest.approx(0.0, abs=1e-4)  # eps 1e-8, float32


def ckd_by_hand(zs, zt, t, negatives="teacher_student"):
    s = zs.tolist()
    tt = zt.tolist()
    norm = lambda v: math.sqrt(sum(x * x for x in v))  # noqa: E731
    cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))  # noqa: E731
    n = len(s)
    total = 0.0
    for i in range(n):
        row = []
        for j in range(n):
            if j == i:
                row.append(cos(tt[i], s[i]) / t)
            elif negatives == "teacher_student":
                row.append(cos(tt[i], s[j]) / t)
            else:
                row.append(cos(s[i], s[j]) / t)
        total += -row[i] + math.log(sum(math.exp(v) for v in row))
    return total / n


@pytest.mark.parametrize("t,negatives", [(1.0, "teacher_student"), (0.5, "teacher_student"),
                                         (2.0, "student_student")])
def test_ckd_matches_loop(t, negatives):
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(5, 7, generator=g) * 2, torch.randn(5, 7, generator=g) * 2
    got = losses.ckd(zs, zt, t, negatives).item()
    assert got == pytest.approx(ckd_by_hand(zs, zt, t, negatives), rel=1e-5)


def test_ckd_rows_are_teacher_anchors():
    # swapping the roles changes the loss (one direction only): compare with the transposed matrix
    g = torch.Generator().manual_seed(2)
    zs, zt = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert losses.ckd(zs, zt).item() != pytest.approx(losses.ckd(zt, zs).item(), rel=1e-3)
    assert losses.ckd(zt, zs).item() == pytest.approx(ckd_by_hand(zt, zs, 1.0), rel=1e-5)


def test_ckd_limits():
    z = torch.randn(6, 10)
    # teacher = student and a tiny temperature: every row's softmax is one-hot on the diagonal
    assert losses.ckd(z, z.clone(), temperature=0.01).item() == pytest.approx(0.0, abs=1e-6)
    # constant logits: all similarities equal -> log(B)
    const = torch.ones(6, 10)
    assert losses.ckd(const, const.clone(), temperature=0.5).item() == pytest.approx(math.log(6), rel=1e-6)
    # hand case: two orthogonal samples, teacher = student -> log(1 + e^(-1/t))
    eye = torch.eye(2)
    assert losses.ckd(eye, eye.clone(), 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_relation_losses_give_gradient_to_student_only():
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5, requires_grad=True)
    (losses.dist(zs, zt) + losses.ckd(zs, zt) + losses.ckd(zs, zt, negatives="student_student")).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0
    assert zt.grad is None
