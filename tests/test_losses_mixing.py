"""Mixed-input losses (mixup/mixup3/CutMix baselines) against loops and their one-source limit."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab import losses


def softmax_list(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_mixed_ce_matches_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 5, generator=g)
    ys = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 0, 1]), torch.tensor([2, 2, 2, 2])]
    lams = [0.5, 0.3, 0.2]
    expected = 0.0
    for lam, y in zip(lams, ys):
        for row, g_ in zip(z.tolist(), y.tolist()):
            expected += lam * -math.log(softmax_list(row)[g_]) / 4
    assert losses.mixed_ce(z, ys, lams).item() == pytest.approx(expected, rel=1e-6)


def test_mixed_distill_soft_target_ce_matches_loop():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(3, 4, generator=g)
    zts = [torch.randn(3, 4, generator=g) * 2, torch.randn(3, 4, generator=g) * 2]
    lams = [0.7, 0.3]
    expected = 0.0
    for lam, zt in zip(lams, zts):
        for a, b in zip(zs.tolist(), zt.tolist()):
            p, q = softmax_list(b), softmax_list(a)
            expected += lam * -sum(u * math.log(v) for u, v in zip(p, q)) / 3
    assert losses.mixed_distill(zs, zts, lams, "ce").item() == pytest.approx(expected, rel=1e-6)


def test_mixed_distill_kl_is_the_weighted_kd_and_one_source_is_plain():
    g = torch.Generator().manual_seed(2)
    zs = torch.randn(3, 6, generator=g)
    zts = [torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)]
    got = losses.mixed_distill(zs, zts, [0.25, 0.75], "kl", 4.0).item()
    expected = 0.25 * losses.kd(zs, zts[0], 4.0).item() + 0.75 * losses.kd(zs, zts[1], 4.0).item()
    assert got == pytest.approx(expected, rel=1e-6)
    y = torch.tensor([1, 2, 3])
    one = losses.mixed_ce(zs, [y, y.flip(0)], [1.0, 0.0]).item()
    assert one == pytest.approx(F.cross_entropy(zs, y).item())
    with pytest.raises(ValueError, match="loss_fn"):
        losses.mixed_distill(zs, zts, [0.5, 0.5], "mse")
