"""mixup, mixup3 and cutmix KD baselines: mixed student input, un-mixed teacher, λ handling, RNG."""

import math

import pytest
import torch
import torch.nn.functional as F

import kdlab
from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.methods import method_defaults
from kdlab.methods.cutmix import cutmix_box
from kdlab.methods.mixup import within_batch_partners


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    return kdlab.create_model("resnet14", num_classes=10), kdlab.create_model("resnet8", num_classes=10)


def _inputs(n=6, size=16):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _soft_ce(zs, zt):
    return -(zt.softmax(1) * zs.log_softmax(1)).sum(1).mean()


@pytest.mark.parametrize("method,lam", [("mixup", 1.0), ("mixup3", [1.0, 0.0, 0.0]), ("cutmix", 1.0)])
def test_lambda_one_gives_the_unmixed_losses(pair, method, lam):
    teacher, student = pair
    d = kdlab.create_distiller(method, student=student, teacher=teacher, lam=lam, w_kd=0.5).train()
    x, y = _inputs()
    logits, terms = d(x, y)
    with torch.no_grad():
        zs = student(x)  # train mode, same batch: same BN statistics
        zt = teacher.eval()(x)
    assert torch.allclose(logits.detach(), zs, atol=1e-5)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(zs, y).item(), rel=1e-5)
    assert terms["rel"].item() == pytest.approx(_soft_ce(zs, zt).item(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.5 * losses.kd(zs, zt, 4.0).item(), rel=1e-5)


@pytest.mark.parametrize("loss_fn", ["ce", "kl"])
def test_mixup_terms_weight_both_sources(pair, loss_fn):
    teacher, student = pair
    d = kdlab.create_distiller("mixup", student=student, teacher=teacher, loss_fn=loss_fn, w_rel=2.0).train()
    x, y = _inputs()
    torch.manual_seed(11)
    logits, terms = d(x, y)
    lam = d.last_mix["weights"].tolist()
    j = d.last_mix["partners"][1]
    assert lam[0] + lam[1] == pytest.approx(1.0) and 0 < lam[0] < 1
    assert torch.equal(d.last_mix["partners"][0], torch.arange(6)) and not (j == torch.arange(6)).any()
    with torch.no_grad():
        zs = student(lam[0] * x + lam[1] * x[j])
        zt = teacher.eval()(x)  # the teacher sees the un-mixed images
    assert torch.allclose(logits.detach(), zs, atol=1e-5)
    ce = lam[0] * F.cross_entropy(zs, y) + lam[1] * F.cross_entropy(zs, y[j])
    if loss_fn == "ce":
        rel = lam[0] * _soft_ce(zs, zt) + lam[1] * _soft_ce(zs, zt[j])
    else:
        rel = lam[0] * losses.kd(zs, zt, 4.0) + lam[1] * losses.kd(zs, zt[j], 4.0)
    assert set(terms) == {"ce", "rel"}
    assert terms["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert terms["rel"].item() == pytest.approx(2.0 * rel.item(), rel=1e-5)


def test_mixup3_weights_are_normalised_beta_draws_and_sources_distinct(pair):
    teacher, student = pair
    d = kdlab.create_distiller("mixup3", student=student, teacher=teacher)
    for seed in range(5):
        torch.manual_seed(seed)
        w = d.draw_weights()
        torch.manual_seed(seed)
        g = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0)).sample((3,)).double()
        assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-12) and min(w) > 0
        assert w == pytest.approx((g / g.sum()).tolist())
    p = within_batch_partners(7, 3)
    for i in range(7):
        assert len({int(p[0, i]), int(p[1, i]), int(p[2, i])}) == 3
    for k in range(3):
        assert sorted(p[k].tolist()) == list(range(7)), "each image appears once per role"
    x, y = _inputs()
    torch.manual_seed(3)
    logits, terms = d(x, y)
    lam = d.last_mix["weights"].tolist()
    pk = d.last_mix["partners"]
    with torch.no_grad():
        zs = student.train()(sum(lam[k] * x[pk[k]] for k in range(3)))
        zt = teacher.eval()(x)
    assert torch.allclose(logits.detach(), zs, atol=1e-5)
    rel = sum(lam[k] * _soft_ce(zs, zt[pk[k]]) for k in range(3))
    assert terms["rel"].item() == pytest.approx(rel.item(), rel=1e-5)


def test_cutmix_lambda_is_the_kept_area_ratio(pair):
    teacher, student = pair
    d = kdlab.create_distiller("cutmix", student=student, teacher=teacher)
    ones, zeros = torch.ones(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    images = torch.cat([ones, zeros])
    partners = torch.tensor([[0, 1], [1, 0]])
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, (lam, rest) = d.mix(images, partners)
        assert lam + rest == pytest.approx(1.0)
        assert mixed[0].mean().item() == pytest.approx(lam, abs=1e-6)  # ones kept outside the box
        assert mixed[1].mean().item() == pytest.approx(1 - lam, abs=1e-6)  # the box came from image 0
        seen.add(round(lam, 6))
    assert len(seen) > 5
    # the box follows the official CutMix arithmetic, clipped at the border
    assert cutmix_box(32, 32, 0.75, 16, 16) == (8, 24, 8, 24)
    assert cutmix_box(32, 32, 0.75, 2, 30) == (22, 32, 0, 10)
    assert cutmix_box(32, 32, 1.0, 5, 5) == (5, 5, 5, 5)  # empty box: lambda stays 1


def test_draws_come_from_torchs_global_rng(pair):
    teacher, student = pair
    x, y = _inputs()
    for method in ("mixup", "mixup3", "cutmix"):
        d = kdlab.create_distiller(method, student=student, teacher=teacher).train()
        torch.manual_seed(7)
        out1 = d(x, y)[1]
        mix1 = {k: v.clone() for k, v in d.last_mix.items()}
        torch.manual_seed(7)
        out2 = d(x, y)[1]
        assert all(torch.equal(mix1[k], d.last_mix[k]) for k in mix1)
        assert all(out1[k].item() == pytest.approx(out2[k].item(), rel=1e-6) for k in out1)
        torch.manual_seed(8)
        d(x, y)
        assert not torch.equal(mix1["weights"], d.last_mix["weights"])


def test_gradients_reach_the_student_only_and_cached_teacher_logits_are_used(pair):
    teacher, student = pair
    d = kdlab.create_distiller("mixup", student=student, teacher=teacher, w_kd=1.0).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    x, y = _inputs()
    opt.zero_grad()
    sum(d(x, y)[1].values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    opt.step()
    assert all(torch.equal(before[k], teacher.state_dict()[k]) for k in before)

    calls = []
    h = teacher.register_forward_hook(lambda *a: calls.append(1))
    try:
        cached = torch.randn(6, 10)
        d = kdlab.create_distiller("mixup", student=student, teacher=teacher, lam=0.25)
        logits, terms = d(Batch(x, y, extra={"teacher_logits": cached}))
        assert not calls
        j = d.last_mix["partners"][1]
        rel = 0.25 * _soft_ce(logits.detach(), cached) + 0.75 * _soft_ce(logits.detach(), cached[j])
        assert terms["rel"].item() == pytest.approx(rel.item(), rel=1e-5)
    finally:
        h.remove()


def test_defaults_and_bad_values(pair):
    teacher, student = pair
    for m in ("mixup", "mixup3", "cutmix"):
        dflt = method_defaults(m)
        assert (dflt["w_cls"], dflt["w_rel"], dflt["w_kd"], dflt["loss_fn"], dflt["temperature"]) == (
            1.0, 1.0, 0.0, "ce", 4.0)
    with pytest.raises(KdlabError, match="loss_fn must be one of"):
        kdlab.create_distiller("mixup", student=student, teacher=teacher, loss_fn="mse")
    with pytest.raises(KdlabError, match="3 non-negative weights summing to 1"):
        kdlab.create_distiller("mixup3", student=student, teacher=teacher, lam=[0.5, 0.5])
    with pytest.raises(KdlabError, match="needs a teacher"):
        kdlab.create_distiller("cutmix", student=student)
    assert math.isclose(sum(kdlab.create_distiller("mixup", student=student, teacher=teacher,
                                                   lam=0.3).draw_weights()), 1.0)


class _Loader:
    """The loader contract in miniature: len() batches, order fixed by (seed, epoch), set_epoch."""

    def __init__(self, n_batches=4, batch_size=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n_batches * batch_size, 3, 8, 8, generator=g)
        self.targets = torch.randint(0, 10, (n_batches * batch_size,), generator=g)
        self.n, self.bs, self.seed, self.epoch, self.start = n_batches, batch_size, seed, 1, 0

    def __len__(self):
        return self.n

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.targets), generator=g)
        for b in range(self.start, self.n):
            idx = order[b * self.bs:(b + 1) * self.bs]
            yield Batch(self.images[idx], self.targets[idx])
        self.start = 0


def test_mixup_run_resumes_bit_identically_through_the_trainer(tmp_path):
    from kdlab.config import Config, OptimConfig, ScheduleConfig, TrainConfig
    from kdlab.engine.trainer import Trainer

    def run(name, resume=False, init=0, **train):
        torch.manual_seed(0)
        teacher = kdlab.create_model("resnet8", num_classes=10)  # fixed, as a loaded checkpoint would be
        torch.manual_seed(init)
        d = kdlab.create_distiller("mixup", student=kdlab.create_model("resnet8", num_classes=10),
                                   teacher=teacher)
        torch.manual_seed(99)  # whatever the RNG holds now, the trainer's seed/checkpoint decides
        t = dict(seed=3, device="cpu", amp="off", progress=False, tensorboard=False,
                 checkpoint_every_steps=2, test_at_end=False)
        cfg = Config(name="mix", optim=OptimConfig(lr=0.05),
                     schedule=ScheduleConfig(name="constant", epochs=2), train=TrainConfig(**{**t, **train}))
        trainer = Trainer(cfg, d, _Loader(), None, None, run_dir=tmp_path / name, resume=resume)
        trainer.fit()
        return {k: v.clone() for k, v in d.state_dict_without_teacher().items()}

    ref = run("ref")
    run("cut", max_steps=5)
    resumed = run("cut", resume=True, init=123)  # other init: only the checkpoint can match
    log = (tmp_path / "cut" / "metrics.jsonl").read_text()
    assert "resume: continuing from" in log and "step 5" in log
    assert ref.keys() == resumed.keys()
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)


@pytest.mark.parametrize("method,lam", [("mixup", 0.3), ("mixup3", [0.5, 0.3, 0.2]), ("cutmix", None)])
def test_pool_sampling_mixes_the_tuple_loaders_sources(pair, method, lam):
    """sampling='pool' (CompKD): each step's mixes are the loader's precomputed tuples, in order."""
    from kdlab.data import TensorImageSet
    from kdlab.data.tuples import TupleLoader

    teacher, student = pair
    kw = {} if lam is None else {"lam": lam}
    d = kdlab.create_distiller(method, student=student, teacher=teacher, sampling="pool", max_pairs=40, **kw)
    k = d.sources
    assert d.loader_kind == "tuples" and d.loader_options == {"pos_and_neg": k, "max_tuples": 40}
    g = torch.Generator().manual_seed(0)
    images = TensorImageSet(torch.randint(0, 256, (30, 3, 16, 16), generator=g, dtype=torch.uint8),
                            torch.arange(30) % 10)
    loader = TupleLoader(images, batch_size=4, seed=1, mean=(0.5,) * 3, std=(0.25,) * 3, **d.loader_options)
    assert len(loader.tuples) == 40
    batch = next(iter(loader))
    assert batch.image.shape[0] == 4 * k
    seen = {}
    hook = student.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach().clone()))
    torch.manual_seed(3)
    logits, terms = d.train()(batch)
    hook.remove()
    w = d.last_mix["weights"].tolist()
    sources = [batch.image[j::k] for j in range(k)]  # rows t·k + j: source j of mix t
    if method == "cutmix":
        assert ((seen["x"] == sources[0]) | (seen["x"] == sources[1])).all()
    else:
        assert torch.allclose(seen["x"], sum(wj * sj for wj, sj in zip(w, sources)), atol=1e-6)
    assert logits.shape == (4 * k, 10) and torch.equal(logits[0::k], logits[k - 1::k])  # one row per source
    zs = logits[0::k].detach()
    want = sum(wj * F.cross_entropy(zs, batch.target[j::k]) for j, wj in enumerate(w))
    assert terms["ce"].item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(KdlabError, match="tuple loader"):
        d(torch.randn(5, 3, 16, 16), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(KdlabError, match="sampling must be"):
        kdlab.create_distiller(method, student=student, teacher=teacher, sampling="pairs")


def test_pool_sampling_runs_few_sample_with_cached_teacher_logits(tmp_path):
    from kdlab.config import load_config
    from kdlab.experiment import build_experiment, run_experiment

    common = ["data.dataset=digits", "data.image_size=16", "data.crop_padding=2", "data.batch_size=16",
              "train.device=cpu", "train.amp=off", "train.progress=false", "train.tensorboard=false",
              f"out_dir={tmp_path}", "student.name=resnet8", "schedule.name=constant", "schedule.epochs=1"]
    teacher = tmp_path / "t.pt"
    torch.manual_seed(0)
    torch.save({"model": kdlab.create_model("resnet8", num_classes=10).state_dict()}, teacher)
    cfg = load_config(None, common + ["teacher.name=resnet8", f"teacher.checkpoint={teacher}", "name=pool",
                                      "method.name=mixup3", "method.params.sampling=pool", "data.subset_size=200",
                                      "data.val_fraction=0.2", "data.cache_teacher=true", "train.max_steps=3"])
    exp = build_experiment(cfg)
    batch = next(iter(exp.train_loader))
    assert batch.image.shape[0] == 16 * 3 and batch.extra["teacher_logits"].shape == (48, 10)
    summary = run_experiment(cfg, overwrite=True)
    assert summary["steps"] == 3
