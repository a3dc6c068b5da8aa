"""SP, CC, RKD, PKT (and CRD's NCE): losses against loop-based recomputations, one training step per pair."""

import math

import pytest
import torch

import kdlab
from kdlab import losses
from kdlab.data.batch import Batch

PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("vgg13", "MobileNetV2"),
         ("resnet32x4", "ShuffleV2"), ("ResNet50", "vgg8")]



def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- losses, recomputed with loops -------------------------------------------------------------

def test_sp_matches_a_loop_over_gram_entries():
    f_s, f_t = _rand(5, 3, 4, 4, seed=1), _rand(5, 6, 2, 2, seed=2)
    b = 5

    def gram(f):
        q = [f[i].reshape(-1) for i in range(b)]
        g = [[float(torch.dot(q[i], q[j])) for j in range(b)] for i in range(b)]
        return [[g[i][j] / math.sqrt(sum(v * v for v in g[i])) for j in range(b)] for i in range(b)]

    gs, gt = gram(f_s), gram(f_t)
    want = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2
    assert losses.sp(f_s, f_t).item() == pytest.approx(want, rel=1e-10)


def test_cc_matches_consecutive_pair_loop():
    e_s, e_t = _rand(6, 4, seed=3), _rand(6, 4, seed=4)
    total = 0.0
    for b in range(5):
        total += sum(abs(e_s[b, d] - e_t[b, d]) * abs(e_s[b + 1, d] - e_t[b + 1, d]) for d in range(4))
    assert losses.cc(e_s, e_t).item() == pytest.approx(float(total) / 5, rel=1e-10)


def _smooth_l1(a, b):
    vals = [abs(x - y) for x, y in zip(a, b)]
    return sum(0.5 * v * v if v < 1 else v - 0.5 for v in vals) / len(vals)


def test_rkd_distance_and_angle_match_triple_loops():
    e_s, e_t = _rand(5, 7, seed=5), _rand(5, 3, seed=6)
    n = 5

    def dists(e):
        d = [[float(torch.linalg.norm(e[i] - e[j])) if i != j else 0.0 for j in range(n)] for i in range(n)]
        mean = sum(v for r in d for v in r if v > 0) / sum(1 for r in d for v in r if v > 0)
        return [v / mean for r in d for v in r]

    def angles(e):
        out = []
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    u, v = e[i] - e[j], e[k] - e[j]
                    nu, nv = float(torch.linalg.norm(u)), float(torch.linalg.norm(v))
                    out.append(float(torch.dot(u, v)) / (max(nu, 1e-12) * max(nv, 1e-12)))
        return out

    want_d = _smooth_l1(dists(e_s), dists(e_t))
    want_a = _smooth_l1(angles(e_s), angles(e_t))
    assert losses.rkd_distance(e_s, e_t).item() == pytest.approx(want_d, rel=1e-6)
    assert losses.rkd_angle(e_s, e_t).item() == pytest.approx(want_a, rel=1e-6)
    assert losses.rkd(e_s, e_t, 2.0, 3.0).item() == pytest.approx(2 * want_d + 3 * want_a, rel=1e-6)


def test_pkt_matches_explicit_conditionals():
    f_s, f_t = _rand(4, 6, seed=7), _rand(4, 9, seed=8)
    eps, n = 1e-7, 4

    def cond(f):
        x = [f[i] / (float(torch.linalg.norm(f[i])) + eps) for i in range(n)]
        k = [[(float(torch.dot(x[i], x[j])) + 1) / 2 for j in range(n)] for i in range(n)]
        return [[k[i][j] / sum(k[i]) for j in range(n)] for i in range(n)]

    ps, pt = cond(f_s), cond(f_t)
    want = sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(n) for j in range(n)) / n**2
    assert losses.pkt(f_s, f_t).item() == pytest.approx(want, rel=1e-8)


def test_crd_nce_matches_equation_18():
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 2
    num_data, eps = 50, 1e-7
    m = 5
    pn = 1 / num_data
    total = 0.0
    for b in range(3):
        total += math.log(x[b, 0] / (x[b, 0] + m * pn + eps))
        for j in range(1, 6):
            total += math.log(m * pn / (x[b, j] + m * pn + eps))
    assert losses.crd_nce(x, num_data).item() == pytest.approx(-total / 3, rel=1e-10)


# ---- methods -----------------------------------------------------------------------------------

def _models(teacher, student):
    torch.manual_seed(0)
    return kdlab.create_model(student, num_classes=10), kdlab.create_model(teacher, num_classes=10)


def train_step(d, student, teacher, batch):
    """One SGD step; checks finite loss, gradients in student and connectors only, teacher unchanged."""
    d.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD(list(d.trainable_parameters()), lr=0.1)
    opt.zero_grad()
    _, terms = d(batch)
    loss = sum(terms.values())
    assert torch.isfinite(loss), terms
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for name, p in d.named_parameters():
        if p.requires_grad and not name.startswith(("student.", "teacher.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"connector {name} got no gradient"
    opt.step()
    assert not teacher.training
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "teacher changed"
    return terms


def _batch(n=4, size=32, classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g),
                 index=torch.arange(n))


@pytest.mark.parametrize("teacher,student", PAIRS)
def test_one_training_step_of_each_relational_method(teacher, student):
    s, t = _models(teacher, student)
    for name in ("sp", "cc", "rkd", "pkt"):
        d = kdlab.create_distiller(name, student=s, teacher=t)
        terms = train_step(d, s, t, _batch())
        assert set(terms) == {"ce", name}
        d._rec_s.remove()
        d._rec_t.remove()
    assert d.extra_parameters() == 0


def test_method_terms_equal_weighted_losses():
    s, t = _models("resnet32x4", "resnet8x4")
    b = _batch()
    rec_s = kdlab.features.FeatureRecorder(s, {"logits", "stages", "pooled"})
    rec_t = kdlab.features.FeatureRecorder(t, {"logits", "stages", "pooled"})
    s.eval(), t.eval()
    with torch.no_grad():
        fs, ft = rec_s(b.image), rec_t(b.image)
    ce = torch.nn.functional.cross_entropy(fs.logits, b.target)
    checks = {
        "sp": (dict(beta=10.0), 10.0 * losses.sp(fs.stages[-1], ft.stages[-1])),
        "pkt": (dict(beta=7.0), 7.0 * losses.pkt(fs.pooled, ft.pooled)),
        "rkd": (dict(beta=2.0), 2.0 * losses.rkd(fs.pooled, ft.pooled)),
        "rkd_logits": (dict(feature="logits"), losses.rkd(fs.logits, ft.logits)),
    }
    for key, (params, want) in checks.items():
        name = key.split("_")[0]
        d = kdlab.create_distiller(name, student=s, teacher=t, ce_weight=0.5, **params).eval()
        with torch.no_grad():
            _, terms = d(b)
        assert terms[name].item() == pytest.approx(want.item(), rel=1e-5), key
        assert terms["ce"].item() == pytest.approx(0.5 * ce.item(), rel=1e-5)
    d = kdlab.create_distiller("cc", student=s, teacher=t, beta=3.0).eval()
    with torch.no_grad():
        _, terms = d(b)
        want = 3.0 * losses.cc(d.embed_s(fs.pooled), d.embed_t(ft.pooled))
    assert terms["cc"].item() == pytest.approx(want.item(), rel=1e-5)
    assert d.extra_parameters() == (256 * 128 + 128) * 2


def test_rkd_rejects_an_unknown_feature():
    s, t = _models("resnet32x4", "resnet8x4")
    with pytest.raises(kdlab.KdlabError, match="feature must be"):
        kdlab.create_distiller("rkd", student=s, teacher=t, feature="stages")
