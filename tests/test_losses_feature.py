"""Feature losses (kdlab.losses.feature) against independent, loop-based second computations."""

from __future__ import annotations

import math

import pytest
import torch

from kdlab import losses
from kdlab.losses.feature import attention_map, fsp_matrices, pool_to_smaller, svd_vectors, vid_log_scale_init


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _block_mean(f, size):
    """Average non-overlapping blocks down to ``size`` (integer ratios only): a second pooling."""
    b, c, h, w = f.shape
    r = h // size
    return f.reshape(b, c, size, r, size, r).mean(dim=(3, 5))


def test_pool_to_smaller_pools_only_the_larger_map():
    a, b = _rand(2, 3, 8, 8), _rand(2, 5, 4, 4, seed=1)
    pa, pb = pool_to_smaller(a, b)
    assert pb is b and torch.allclose(pa, _block_mean(a, 4))
    qb, qa = pool_to_smaller(b, a)
    assert qb is b and torch.allclose(qa, _block_mean(a, 4))


def test_hint_is_element_mean_squared_error():
    a, b = _rand(2, 3, 4, 4), _rand(2, 3, 4, 4, seed=1)
    ref = sum((x - y) ** 2 for x, y in zip(a.flatten().tolist(), b.flatten().tolist())) / a.numel()
    assert losses.hint(a, b).item() == pytest.approx(ref, rel=1e-10)


def _attention_ref(f, p):
    out = []
    for sample in f:
        am = [sum(float(sample[c, h, w]) ** p for c in range(f.shape[1])) / f.shape[1]
              for h in range(f.shape[2]) for w in range(f.shape[3])]
        norm_ = math.sqrt(sum(v * v for v in am))
        out.append([v / norm_ for v in am])
    return out


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_at_matches_a_loop_over_positions(p):
    f_s, f_t = _rand(2, 3, 8, 8).abs(), _rand(2, 6, 4, 4, seed=1).abs()  # different C and size
    a_s, a_t = _attention_ref(_block_mean(f_s, 4), p), _attention_ref(f_t, p)
    ref = sum((x - y) ** 2 for rs, rt in zip(a_s, a_t) for x, y in zip(rs, rt)) / (2 * 16)
    assert losses.at(f_s, f_t, p).item() == pytest.approx(ref, rel=1e-9)
    assert attention_map(f_t, p).shape == (2, 16)


def test_nst_matches_a_loop_over_channel_pairs():
    f_s, f_t = _rand(2, 3, 4, 4), _rand(2, 5, 8, 8, seed=1)
    f_t_p = _block_mean(f_t, 4)

    def normed(f):
        return [[row / row.norm() for row in sample.reshape(sample.shape[0], -1)] for sample in f]

    s, t = normed(f_s), normed(f_t_p)

    def k_mean(a, b):
        vals = [float(x @ y) ** 2 for sa, sb in zip(a, b) for x in sa for y in sb]
        return sum(vals) / len(vals)

    ref = k_mean(t, t) + k_mean(s, s) - 2 * k_mean(s, t)
    assert losses.nst(f_s, f_t).item() == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("p2", [1, 2])
def test_factor_transfer_compares_attention_maps_of_the_factors(p2):
    f_s, f_t = _rand(2, 4, 4, 4), _rand(2, 2, 8, 8, seed=1)
    a_s, a_t = _attention_ref(f_s, 2), _attention_ref(_block_mean(f_t, 4), 2)
    diffs = [x - y for rs, rt in zip(a_s, a_t) for x, y in zip(rs, rt)]
    ref = sum(abs(d) if p2 == 1 else d ** p2 for d in diffs) / len(diffs)
    assert losses.factor_transfer(f_s, f_t, 2, p2).item() == pytest.approx(ref, rel=1e-9)


def test_ab_alternative_l2_element_by_element():
    s, t = _rand(2, 3, 2, 2) * 2, _rand(2, 3, 2, 2, seed=1)
    m = 1.0
    ref = 0.0
    for x, y in zip(s.flatten().tolist(), t.flatten().tolist()):
        if y <= 0 and x > -m:
            ref += (x + m) ** 2
        elif y > 0 and x <= m:
            ref += (x - m) ** 2
    assert losses.ab(s, t, m).item() == pytest.approx(ref, rel=1e-10)


def test_fsp_matches_explicit_gram_sums():
    g_s = [_rand(2, 3, 8, 8), _rand(2, 4, 4, 4, seed=1), _rand(2, 4, 4, 4, seed=2)]
    g_t = [_rand(2, 3, 8, 8, seed=3), _rand(2, 4, 4, 4, seed=4), _rand(2, 4, 4, 4, seed=5)]

    def gram(bot, top):
        if bot.shape[-1] > top.shape[-1]:
            bot = _block_mean(bot, top.shape[-1])
        hw = bot.shape[2] * bot.shape[3]
        return [[[sum(float(bot[b, i].flatten()[k] * top[b, j].flatten()[k]) for k in range(hw)) / hw
                  for j in range(top.shape[1])] for i in range(bot.shape[1])] for b in range(bot.shape[0])]

    refs = []
    for l in range(2):
        gs, gt = gram(g_s[l], g_s[l + 1]), gram(g_t[l], g_t[l + 1])
        flat = [(a - b) ** 2 for xs, xt in zip(gs, gt) for rs, rt in zip(xs, xt) for a, b in zip(rs, rt)]
        refs.append(sum(flat) / len(flat))
    got = losses.fsp(g_s, g_t)
    assert [v.item() for v in got] == pytest.approx(refs, rel=1e-9)
    assert fsp_matrices(g_s)[0].shape == (2, 3, 4)


def _svd_ref(feat, n, space):
    """Per-sample SVD of an explicitly built matrix, then the same normalisations."""
    us, vs = [], []
    for sample in feat:
        c, h, w = sample.shape
        if space == "channel":
            mat = torch.stack([sample[:, i, j] for i in range(h) for j in range(w)])  # HW × C
        else:
            mat = torch.cat([sample[ch] for ch in range(c)], dim=0)  # CH × W
        _, s, vh = torch.linalg.svd(mat, full_matrices=False)
        s = s[:n] / s[:n].norm()
        v = vh[:n].T
        v = v / v.norm(dim=0, keepdim=True)
        us.append(s)
        vs.append(v)
    return us, vs


@pytest.mark.parametrize("space", ["channel", "width"])
def test_kdsvd_matches_a_per_sample_computation(space):
    g_s = [_rand(2, 4, 4, 4), _rand(2, 5, 2, 2, seed=1)]
    g_t = [_rand(2, 4, 4, 4, seed=2), _rand(2, 5, 2, 2, seed=3)]
    if space == "width":
        g_s[1], g_t[1] = _rand(2, 3, 4, 4, seed=1), _rand(2, 6, 4, 4, seed=3)
    prev = None
    total = 0.0
    for f_s, f_t in zip(g_s, g_t):
        st, vt = _svd_ref(f_t, 1, space)
        _, vs = _svd_ref(f_s, 4, space)
        cur_s, cur_t = [], []
        for b in range(2):
            cos = [float(vs[b][:, i] @ vt[b][:, 0]) for i in range(vs[b].shape[1])]
            best = max(range(len(cos)), key=lambda i: abs(cos[i]))
            aligned = vs[b][:, best] * math.copysign(1.0, cos[best])
            cur_s.append(aligned * st[b][0])
            cur_t.append(vt[b][:, 0] * st[b][0])
        if prev is not None:
            for b in range(2):
                for a in range(len(cur_s[b])):
                    for c in range(len(prev[0][b])):
                        rs = math.exp(-float(cur_s[b][a] - prev[0][b][c]) ** 2 / 8)
                        rt = math.exp(-float(cur_t[b][a] - prev[1][b][c]) ** 2 / 8)
                        total += (rs - rt) ** 2
        prev = (cur_s, cur_t)
    got = losses.kdsvd(g_s, g_t, k=1, space=space)
    assert len(got) == 1
    assert got[0].item() == pytest.approx(total / 2, rel=1e-6, abs=1e-12)


def test_kdsvd_gradient_is_finite_for_a_degenerate_map():
    f_s = torch.zeros(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)  # all singular values 0
    f_s2 = torch.ones(2, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    loss = sum(losses.kdsvd([f_s, f_s2], [_rand(2, 4, 4, 4), _rand(2, 4, 2, 2, seed=1)]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f_s.grad).all() and torch.isfinite(f_s2.grad).all()
    s, v = svd_vectors(_rand(3, 4, 4, 4), 2)
    assert s.shape == (3, 2) and v.shape == (3, 4, 2)


def test_vid_gaussian_nll_channel_by_channel():
    mu, t = _rand(2, 3, 2, 2), _rand(2, 3, 2, 2, seed=1)
    log_scale = _rand(3, seed=2)
    ref = 0.0
    for c in range(3):
        var = math.log(1 + math.exp(float(log_scale[c]))) + 1e-5
        for b in range(2):
            for h in range(2):
                for w in range(2):
                    ref += 0.5 * (float(mu[b, c, h, w] - t[b, c, h, w]) ** 2 / var + math.log(var))
    assert losses.vid(mu, t, log_scale, 1e-5).item() == pytest.approx(ref / mu.numel(), rel=1e-9)
    init = vid_log_scale_init(5.0, 1e-5)
    assert math.log1p(math.exp(init)) + 1e-5 == pytest.approx(5.0, rel=1e-9)


def test_ofd_margin_matches_the_scipy_formula():
    norm = pytest.importorskip("scipy.stats").norm
    std = torch.tensor([1.0, 0.5, -2.0, 0.1, 1.0, 3.0])
    mean = torch.tensor([0.0, 1.0, -1.0, 2.0, -4.0, 0.3])
    ref = []
    for s, m in zip(std.tolist(), mean.tolist()):
        s = abs(s)
        if norm.cdf(-m / s) > 0.001:
            ref.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / norm.cdf(-m / s) + m)
        else:
            ref.append(-3 * s)
    assert losses.ofd_margin(std, mean).tolist() == pytest.approx(ref, rel=1e-5)


def test_ofd_partial_l2_matches_mdistiller_expanded_form():
    s, t = _rand(3, 4, 2, 2) * 2, _rand(3, 4, 2, 2, seed=1) * 2
    margin = -_rand(4, seed=2).abs() - 0.1
    m = margin.view(1, -1, 1, 1)
    ref = ((s - m) ** 2 * ((s > m) & (t <= m)) + (s - t) ** 2 * ((s > t) & (t > m) & (t <= 0))
           + (s - t) ** 2 * (t > 0))
    ref = ref.mean(dim=0).sum()
    assert losses.ofd(s, t, margin).item() == pytest.approx(ref.item(), rel=1e-10)


@pytest.mark.parametrize("p2", [1, 2])
def test_factor_transfer_paper_form_normalises_the_whole_factor(p2):
    f_s, f_t = _rand(2, 3, 4, 4), _rand(2, 3, 8, 8, seed=1)
    t_small = _block_mean(f_t, 4)  # the larger map is pooled to the smaller one
    total = 0.0
    for b in range(2):
        xs = [v for ch in f_s[b].tolist() for row in ch for v in row]
        xt = [v for ch in t_small[b].tolist() for row in ch for v in row]
        ns, nt = math.sqrt(sum(v * v for v in xs)), math.sqrt(sum(v * v for v in xt))
        total += sum(abs(a / ns - c / nt) ** p2 for a, c in zip(xs, xt)) ** (1 / p2)
    got = losses.factor_transfer(f_s, f_t, 2, p2, form="paper").item()
    assert got == pytest.approx(total / 2, rel=1e-9)
