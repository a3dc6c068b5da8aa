"""compose: the weighted sum of parts, one forward per network, the CE rule, errors, `list methods --pair`."""

import pytest
import torch
import torch.nn.functional as F
from test_methods_relational import PAIRS, _batch, _models, train_step

import kdlab
from kdlab.data.batch import Batch
from kdlab.data.contrast import ContrastSampler, batch_generator
from kdlab.errors import KdlabError

TERMS = [
    {"method": "kd", "weight": 1.5, "params": {"temperature": 2.0, "kd_weight": 1.0}},
    {"method": "sp", "weight": 0.5, "params": {"beta": 100.0}},
    {"method": "cc", "weight": 2.0},
    {"method": "rkd", "weight": 0.25, "name": "rkd_logits", "params": {"feature": "logits"}},
]


def _count_forwards(*models):
    calls = [0] * len(models)
    handles = [m.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, m in enumerate(models)]
    return calls, handles


def test_compose_equals_the_weighted_sum_of_separate_methods_with_one_forward_per_network():
    s, t = _models("resnet32x4", "resnet8x4")
    d = kdlab.create_distiller("compose", student=s, teacher=t, terms=TERMS, ce_weight=0.7).eval()
    b = _batch()
    calls, handles = _count_forwards(s, t)
    with torch.no_grad():
        logits, terms = d(b)
    for h in handles:
        h.remove()
    assert calls == [1, 1], "compose must run the student and the teacher once each"
    assert set(terms) == {"ce", "kd.kd", "sp.sp", "cc.cc", "rkd_logits.rkd"}

    want = {"ce": 0.7 * F.cross_entropy(logits, b.target).item()}
    for entry in TERMS:
        label = entry.get("name", entry["method"])
        single = kdlab.create_distiller(entry["method"], student=s, teacher=t, **entry.get("params", {}))
        if entry["method"] == "cc":  # same connector weights as the composite's part
            single.load_state_dict(d.parts["cc"].state_dict(), strict=False)
        with torch.no_grad():
            _, alone = single.eval()(b)
        single._rec_s.remove()
        single._rec_t.remove()
        for k, v in alone.items():
            if k != "ce":
                want[f"{label}.{k}"] = entry["weight"] * v.item()
    for k, v in want.items():
        assert terms[k].item() == pytest.approx(v, rel=1e-5), k
    assert sum(terms.values()).item() == pytest.approx(sum(want.values()), rel=1e-5)


def test_parts_are_built_without_ce_and_without_owning_the_networks():
    s, t = _models("resnet32x4", "resnet8x4")
    d = kdlab.create_distiller("compose", student=s, teacher=t, terms=TERMS)
    assert all(p.is_part and p._rec_s is None for p in d.parts.values())
    assert all(p.ce_weight == 0.0 for p in d.parts.values())
    assert d.needs.student == {"logits", "stages", "pooled"} and d.needs.teacher == {"logits", "stages", "pooled"}
    keys = set(d.state_dict())
    assert not any(".student." in k or ".teacher." in k for k in keys), "parts must not hold the networks"
    assert {"parts.cc.embed_s.linear.weight", "parts.cc.embed_t.linear.weight"} <= keys
    trainable = {id(p) for p in d.trainable_parameters()}
    assert {id(p) for p in d.parts["cc"].parameters()} <= trainable
    assert d.extra_parameters() == sum(p.numel() for p in d.parts["cc"].parameters())
    with pytest.raises(KdlabError, match="part of a composite"):
        d.parts["sp"](torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("teacher,student", PAIRS)
def test_compose_training_step(teacher, student):
    s, t = _models(teacher, student)
    d = kdlab.create_distiller("compose", student=s, teacher=t, terms=TERMS)
    terms = train_step(d, s, t, _batch())
    assert all(torch.isfinite(v) for v in terms.values())


def test_compose_forwards_data_facts_and_merges_class_requirements():
    s, t = _models("resnet32x4", "resnet8x4")
    n, k = 24, 8
    d = kdlab.create_distiller("compose", student=s, teacher=t, num_data=n, image_size=32, num_classes=10,
                               terms=[{"method": "kd"}, {"method": "crd", "params": {"nce_k": k}}])
    part = d.parts["crd"]
    assert part.num_data == n and part.memory.memory_s.shape == (n, 128)
    assert d.needs_index and d.contrast_negatives == k and d.contrast_mode == "exact"
    assert not d.drop_last and d.teacher_mode == "eval"
    targets = torch.arange(n) % 4
    index = torch.tensor([0, 5, 9, 14])
    sampler = ContrastSampler(targets, k)
    b = Batch(torch.randn(4, 3, 32, 32), targets[index], index=index,
              extra={"contrast_index": sampler.draw(index, batch_generator(0, 1, 0))})
    before = part.memory.memory_s.clone()
    terms = train_step(d, s, t, b)
    assert set(terms) == {"ce", "kd.kd", "crd.crd"}
    assert sorted((part.memory.memory_s != before).any(1).nonzero().squeeze(1).tolist()) == index.tolist()
    assert "parts.crd.memory.memory_s" in d.state_dict_without_teacher()


def test_compose_errors_are_one_line():
    s, t = _models("resnet32x4", "resnet8x4")
    make = lambda terms, **kw: kdlab.create_distiller("compose", student=s, teacher=t, terms=terms, **kw)  # noqa: E731
    with pytest.raises(KdlabError, match=r"unknown method 'spp'; did you mean 'sp'"):
        make([{"method": "spp"}])
    with pytest.raises(KdlabError, match=r"method 'sp' has no hyper-parameter 'betta'; did you mean 'beta'"):
        make([{"method": "sp", "params": {"betta": 1.0}}])
    with pytest.raises(KdlabError, match="set compose's own ce_weight"):
        make([{"method": "kd", "params": {"ce_weight": 1.0}}])
    with pytest.raises(KdlabError, match="non-empty 'terms'"):
        make([])
    with pytest.raises(KdlabError, match="unknown key"):
        make([{"method": "kd", "wieght": 2}])
    with pytest.raises(KdlabError, match="forward pass"):
        make([{"method": "mixup"}])
    with pytest.raises(KdlabError, match="has no hyper-parameter 'term'"):
        kdlab.create_distiller("compose", student=s, teacher=t, term=[])
    for msg in ("unknown method", "has no hyper-parameter"):
        try:
            make([{"method": "spp"}] if msg == "unknown method" else [{"method": "sp", "params": {"x": 1}}])
        except KdlabError as e:
            assert "\n" not in str(e)


def test_list_methods_with_a_pair_prints_extra_parameters(monkeypatch, capsys):
    import kdlab.methods
    from kdlab.cli import main

    real = kdlab.methods.list_methods
    monkeypatch.setattr(kdlab.methods, "list_methods", lambda: [m for m in real() if m in
                                                                {"sp", "cc", "crd", "compose", "kd"}])
    assert main(["list", "methods", "--pair", "resnet32x4,resnet8x4", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[3:]}
    emb = 2 * (256 * 128 + 128)
    assert rows == {"cc": f"{emb:,}", "compose": "n/a:", "crd": f"{emb:,}", "kd": "0", "sp": "0"}
    assert "compose needs a non-empty 'terms' list" in out
    assert main(["list", "methods", "--pair", "resnet32x4"]) == 2


def test_compose_takes_the_parts_instance_requirements():
    """OFD with teacher_mode=eval keeps the shared teacher in eval mode; ReviewKD's per-instance needs
    (pre-activation maps of the student only when asked) are what the composite records."""
    s, t = _models("resnet32x4", "resnet8x4")
    d = kdlab.create_distiller("compose", student=s, teacher=t, terms=[
        {"method": "ofd", "params": {"teacher_mode": "eval"}}, {"method": "reviewkd"}])
    assert d.teacher_mode == "eval"
    d.train()
    assert s.training and not t.training
    assert d.needs.student == {"logits", "preact", "stages", "pooled"}  # OFD: preact; ReviewKD: stages
    d2 = kdlab.create_distiller("compose", student=s, teacher=t, terms=[{"method": "ofd"}]).train()
    assert d2.teacher_mode == "train" and t.training


def test_kd_is_counted_once_next_to_a_kd_part():
    s, t = _models("resnet32x4", "resnet8x4")
    d = kdlab.create_distiller("compose", student=s, teacher=t, batch_size=8, terms=[
        {"method": "kd", "params": {"kd_weight": 1.0}}, {"method": "semckd"}, {"method": "srrl"}])
    assert d.parts["semckd"].kd_weight == 0.0 and d.parts["srrl"].kd_weight == 0.0
    with torch.no_grad():
        _, terms = d.eval()(_batch(n=8))
    assert [k for k in terms if k.endswith(".kd")] == ["kd.kd"]  # SemCKD/SRRL return no KD term at weight 0
    alone = kdlab.create_distiller("compose", student=s, teacher=t, batch_size=8, terms=[{"method": "semckd"}])
    assert alone.parts["semckd"].kd_weight == 1.0  # no kd part: SemCKD keeps its own KD 1
    with pytest.raises(KdlabError, match="count KD twice"):
        kdlab.create_distiller("compose", student=s, teacher=t, terms=[
            {"method": "kd"}, {"method": "crd", "params": {"kd_weight": 1.0}}], num_data=16)


def test_batch_size_is_a_data_fact_for_semckd_in_compose_and_alone():
    from kdlab.config import load_config
    from kdlab.experiment import method_params

    s, t = _models("resnet32x4", "resnet8x4")
    d = kdlab.create_distiller("compose", student=s, teacher=t, batch_size=16, terms=[{"method": "semckd"}])
    assert d.parts["semckd"].batch_size == 16 and d.parts["semckd"].query[0].linear1.in_features == 16
    assert d.drop_last

    class Data:  # the facts method_params reads
        image_size, train, num_classes = (32, 32), range(100), 10

    cfg = load_config("cifar100/semckd/resnet32x4_resnet8x4", ["data.batch_size=48"])
    assert method_params(cfg, Data())["batch_size"] == 48
    cfg = load_config("cifar100/semckd/resnet32x4_resnet8x4", ["data.batch_size=48", "method.params.batch_size=32"])
    assert method_params(cfg, Data())["batch_size"] == 32  # a set value wins


def test_few_sample_and_mixing_methods_cannot_be_parts():
    s, t = _models("resnet32x4", "resnet8x4")
    for name in ("comparative", "mixup3", "cutmix"):
        with pytest.raises(KdlabError, match="cannot be a part of compose"):
            kdlab.create_distiller("compose", student=s, teacher=t, terms=[{"method": name}])
