"""CRD: contrast indices from the real loader, memory banks, Z, the NCE terms, one training step per pair."""

import pytest
import torch
import torch.nn.functional as F
from test_methods_relational import PAIRS, _models, train_step

import kdlab
from kdlab import losses
from kdlab.data import TensorImageSet, build_loader
from kdlab.data.batch import Batch
from kdlab.data.contrast import ContrastSampler, batch_generator
from kdlab.errors import KdlabError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)



def _imageset(counts=(10, 7, 12, 9, 6, 8), size=8, seed=0):
    """A small set with several, unequal classes, in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    targets = targets[torch.randperm(targets.numel(), generator=g)]
    images = torch.randint(0, 256, (targets.numel(), 3, size, size), dtype=torch.uint8, generator=g)
    return TensorImageSet(images, targets)


def _loader(images, k, mode="exact", batch_size=8, seed=3):
    return build_loader(images, batch_size=batch_size, train=True, mean=MEAN, std=STD, seed=seed,
                        contrast_negatives=k, contrast_mode=mode)


@pytest.mark.parametrize("k", [20, 60])  # 60 > every other-class pool (≤ 46): drawn with replacement
def test_loader_negatives_are_never_of_the_anchor_class_and_the_positive_is_the_anchor(k):
    images = _imageset()
    targets = images.targets
    loader = _loader(images, k)
    assert loader.contrast.with_replacement == (k == 60)
    seen = 0
    for epoch in (1, 2):
        loader.set_epoch(epoch)
        for batch in loader:
            ci = batch.extra["contrast_index"]
            assert ci.shape == (batch.target.numel(), k + 1) and ci.dtype == torch.int64
            assert torch.equal(ci[:, 0], batch.index)
            assert torch.equal(targets[batch.index], batch.target)
            for row, anchor in zip(ci, batch.index.tolist()):
                neg = row[1:]
                assert (targets[neg] != targets[anchor]).all()
                assert ((neg >= 0) & (neg < len(images))).all()
                pool = int((targets != targets[anchor]).sum())
                if k <= pool:
                    assert neg.unique().numel() == k, "negatives must be drawn without replacement"
                seen += 1
    assert seen == 2 * len(images)


def test_negatives_cover_the_other_classes_and_relax_positives_share_the_class():
    images = _imageset()
    targets = images.targets
    loader = _loader(images, 30, mode="relax")
    hits = torch.zeros(len(images), dtype=torch.int64)
    for batch in loader:
        ci = batch.extra["contrast_index"]
        assert torch.equal(targets[ci[:, 0]], batch.target)
        assert (targets[ci[:, 1:]] != batch.target[:, None]).all()
        hits += torch.bincount(ci[:, 1:].reshape(-1), minlength=len(images))
    assert (hits > 0).all(), "every sample should serve as a negative for some anchor"


def test_contrast_indices_are_reproducible_on_resume():
    images = _imageset()
    loader = _loader(images, 25)
    loader.set_epoch(4)
    full = [(b.index.clone(), b.extra["contrast_index"].clone()) for b in loader]
    loader.set_epoch(4, start_batch=2)
    resumed = [(b.index, b.extra["contrast_index"]) for b in loader]
    assert len(resumed) == len(full) - 2
    for (i0, c0), (i1, c1) in zip(full[2:], resumed):
        assert torch.equal(i0, i1) and torch.equal(c0, c1)
    loader.set_epoch(5)
    other = next(iter(loader)).extra["contrast_index"]
    assert not torch.equal(other, full[0][1])


def test_sampler_errors():
    with pytest.raises(KdlabError, match="two classes"):
        ContrastSampler(torch.zeros(5, dtype=torch.int64), 3)
    with pytest.raises(KdlabError, match="mode"):
        ContrastSampler(torch.arange(4), 3, mode="loose")


def _crd(student, teacher, num_data, k, **kw):
    return kdlab.create_distiller("crd", student=student, teacher=teacher, num_data=num_data, nce_k=k, **kw)


def _crd_batch(targets, index, k, seed=0):
    sampler = ContrastSampler(targets, k)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(index.numel(), 3, 32, 32, generator=g)
    return Batch(x, targets[index], index=index,
                 extra={"contrast_index": sampler.draw(index, batch_generator(0, 1, seed))})


@pytest.mark.parametrize("teacher,student", PAIRS)
def test_one_crd_training_step_per_pair(teacher, student):
    s, t = _models(teacher, student)
    targets = torch.arange(40) % 5
    d = _crd(s, t, 40, 16, kd_weight=1.0)
    assert d.needs_index and d.contrast_negatives == 16 and d.contrast_mode == "exact"
    terms = train_step(d, s, t, _crd_batch(targets, torch.tensor([3, 17, 22, 8]), 16))
    assert set(terms) == {"ce", "crd", "kd"}
    assert d.extra_parameters() == sum(p.numel() for p in (*d.embed_s.parameters(), *d.embed_t.parameters()))


def test_crd_scores_memory_update_and_z_follow_the_reference():
    s, t = _models("resnet32x4", "resnet8x4")
    n, k, tau, m = 30, 12, 0.07, 0.5
    targets = torch.arange(n) % 3
    d = _crd(s, t, n, k, ce_weight=0.3, weight=0.8).train()
    mem_s0, mem_t0 = d.memory.memory_s.clone(), d.memory.memory_t.clone()
    assert (d.memory.z < 0).all()
    index = torch.tensor([4, 11, 25, 0, 19])
    batch = _crd_batch(targets, index, k)
    ci = batch.extra["contrast_index"]
    logits, terms = d(batch)

    s_rec = kdlab.features.FeatureRecorder(s, {"pooled"})
    with torch.no_grad():
        # same student mode and input: the student's pooled feature is recomputed identically
        v_s = d.embed_s(s_rec(batch.image).pooled)
        t_pooled = kdlab.features.FeatureRecorder(t, {"pooled"})(batch.image).pooled
        v_t = d.embed_t(t_pooled)
    s_rec.remove()
    raw_s = torch.empty(5, k + 1)
    raw_t = torch.empty(5, k + 1)
    for b in range(5):
        for j in range(k + 1):
            raw_s[b, j] = torch.exp(torch.dot(mem_t0[ci[b, j]], v_s[b]) / tau)
            raw_t[b, j] = torch.exp(torch.dot(mem_s0[ci[b, j]], v_t[b]) / tau)
    z_s, z_t = raw_s.mean() * n, raw_t.mean() * n
    assert d.memory.z[0].item() == pytest.approx(z_s.item(), rel=1e-4)
    assert d.memory.z[1].item() == pytest.approx(z_t.item(), rel=1e-4)
    want = 0.8 * (losses.crd_nce(raw_s / z_s, n) + losses.crd_nce(raw_t / z_t, n))
    assert terms["crd"].item() == pytest.approx(want.item(), rel=1e-4)
    assert terms["ce"].item() == pytest.approx(0.3 * F.cross_entropy(logits, batch.target).item(), rel=1e-5)

    # memories: only the anchors' rows move, to normalize(m·old + (1−m)·v)
    changed = (d.memory.memory_s != mem_s0).any(1).nonzero().squeeze(1)
    assert sorted(changed.tolist()) == sorted(index.tolist())
    assert torch.allclose(d.memory.memory_s[index], F.normalize(m * mem_s0[index] + (1 - m) * v_s, dim=1), atol=1e-5)
    assert torch.allclose(d.memory.memory_t[index], F.normalize(m * mem_t0[index] + (1 - m) * v_t, dim=1), atol=1e-5)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(d.memory.memory_t[untouched], mem_t0[untouched])

    # Z is frozen after the first batch and travels with the state (exact resume)
    z = d.memory.z.clone()
    d(_crd_batch(targets, torch.tensor([1, 2, 3]), k, seed=1))
    assert torch.equal(d.memory.z, z)
    state = d.state_dict_without_teacher()
    assert {"memory.memory_s", "memory.memory_t", "memory.z"} <= set(state)
    d2 = _crd(s, t, n, k)
    d2.load_state_dict_without_teacher(state)
    assert torch.equal(d2.memory.z, z) and torch.equal(d2.memory.memory_s, d.memory.memory_s)


def test_crd_through_the_real_loader_and_clear_errors():
    images = _imageset(size=32)
    s, t = _models("resnet32x4", "resnet8x4")
    d = _crd(s, t, len(images), 20)
    loader = _loader(images, d.contrast_negatives, d.contrast_mode)
    batch = next(iter(loader))
    _, terms = d(batch)
    assert torch.isfinite(terms["crd"])
    with pytest.raises(KdlabError, match="contrast_index"):
        d(Batch(batch.image, batch.target, index=batch.index))
    with pytest.raises(KdlabError, match="num_data"):
        kdlab.create_distiller("crd", student=s, teacher=t)
    with pytest.raises(KdlabError, match="mode"):
        _crd(s, t, 10, 4, mode="loose")


def test_crd_on_logits_embeds_the_logits_as_comparative_kd_does():
    s, t = _models("resnet32x4", "resnet8x4")
    targets = torch.arange(40) % 5
    d = _crd(s, t, 40, 16, feature="logits")
    assert (d.embed_s.linear.in_features, d.embed_t.linear.in_features) == (10, 10)  # 10 classes
    seen = {}
    hook = d.embed_s.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach()))
    batch = _crd_batch(targets, torch.tensor([3, 17, 22, 8]), 16)
    terms = train_step(d, s, t, batch)
    hook.remove()
    assert set(terms) == {"ce", "crd"} and seen["x"].shape == (4, 10)
    with pytest.raises(KdlabError, match="feature must be"):
        _crd(s, t, 40, 16, feature="stages")
