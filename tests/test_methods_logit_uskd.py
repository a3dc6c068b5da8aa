"""USKD: self-distillation without a teacher, its auxiliary head, and its loss terms."""

import pytest
import torch
import torch.nn.functional as F
import yaml

import kdlab
from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.features import FeatureRecorder
from kdlab.methods import describe_method, method_defaults


def _data(n=16, size=16, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture()
def student():
    torch.manual_seed(1)
    return kdlab.create_model("resnet8", num_classes=10)


def test_uskd_needs_no_teacher_and_ignores_one(student):
    d = kdlab.create_distiller("uskd", student=student)
    assert d.teacher is None and type(d).uses_teacher is False
    other = kdlab.create_model("resnet8", num_classes=10)
    assert kdlab.create_distiller("uskd", student=student, teacher=other).teacher is None
    assert describe_method("uskd").startswith("Universal self-KD (no teacher)")
    assert method_defaults("uskd")["alpha"] == 0.1 and method_defaults("uskd")["mu"] == 0.1


def test_aux_head_is_sized_from_the_stage_before_last_and_kept_out_of_inference(student):
    d = kdlab.create_distiller("uskd", student=student)
    # resnet8 stages: stem 16, 16, 32, 64 channels -> stages[-2] has 32
    assert (d.aux_head.in_features, d.aux_head.out_features) == (32, 10)
    assert d.extra_parameters() == 32 * 10 + 10
    model = d.inference_model()
    assert model is student
    head = {id(p) for p in d.aux_head.parameters()}
    assert not head & {id(p) for p in model.parameters()}
    assert not any("aux" in k for k in model.state_dict())
    assert head <= {id(p) for p in d.trainable_parameters()}
    assert any(k.startswith("aux_head.") for k in d.state_dict_without_teacher())
    shallower = kdlab.create_distiller("uskd", student=student, feature_stage=1)
    assert shallower.aux_head.in_features == 16
    with pytest.raises(KdlabError, match="feature_stage=7 is out of range"):
        kdlab.create_distiller("uskd", student=student, feature_stage=7)


def test_terms_equal_the_weighted_uskd_parts(student):
    d = kdlab.create_distiller("uskd", student=student, alpha=0.7, beta=0.3, mu=0.2).train()
    x, y = _data(8)
    logits, terms = d(x, y)
    rec = FeatureRecorder(student, {"logits", "stages"})
    try:
        with torch.no_grad():
            f = rec(x)
    finally:
        rec.remove()
    aux = d.aux_head(f.stages[-2].mean(dim=(2, 3))).detach()
    l_t, l_non, l_weak = losses.uskd_parts(f.logits, aux, y)
    assert torch.allclose(logits.detach(), f.logits, atol=1e-5)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(f.logits, y).item(), rel=1e-5)
    assert terms["uskd_target"].item() == pytest.approx(0.7 * l_t.item(), rel=1e-5)
    assert terms["uskd_non_target"].item() == pytest.approx(0.3 * l_non.item(), rel=1e-5)
    assert terms["uskd_weak"].item() == pytest.approx(0.2 * l_weak.item(), rel=1e-5)


def test_uskd_trains_without_a_teacher(student):
    d = kdlab.create_distiller("uskd", student=student).train()
    x, y = _data(16)
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.05, momentum=0.9)
    head_before = d.aux_head.weight.detach().clone()
    first = None
    for _ in range(12):
        _, terms = d(x, y)
        loss = sum(terms.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        assert d.aux_head.weight.grad is not None and d.aux_head.weight.grad.abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        opt.step()
    with torch.no_grad():
        last = sum(d(x, y)[1].values()).item()
    assert last < 0.8 * first, (first, last)
    assert not torch.equal(head_before, d.aux_head.weight)


def test_on_a_vit_the_head_reads_the_class_token_of_block_half_minus_one():
    torch.manual_seed(0)
    vit = kdlab.create_model("vit_tiny_patch4_64", num_classes=10, depth=4)  # 64 px only: sized at 64
    d = kdlab.create_distiller("uskd", student=vit)
    assert (d.aux_head.in_features, d.aux_head.out_features) == (192, 10)
    seen = {}
    hook = vit.blocks[4 // 2 - 1].register_forward_hook(lambda m, a, out: seen.setdefault("tokens", out))
    try:
        x = torch.randn(2, 3, 64, 64)
        f = FeatureRecorder(vit, {"logits", "stages"})
        with torch.no_grad():
            feats = f(x)
        f.remove()
    finally:
        hook.remove()
    expected = d.aux_head(seen["tokens"][:, 0])  # block L/2 - 1, class token
    assert torch.allclose(d.aux_logits(feats), expected, atol=1e-6)
    with pytest.raises(KdlabError, match="set method.params.image_size"):
        kdlab.create_distiller("uskd", student=vit, image_size=32)  # the 64 px ViT rejects 32 px


def test_a_shipped_config_without_a_teacher_trains_from_the_cli(tmp_path, capsys, no_fsync):
    from kdlab.cli import main

    code = main(["train", "cifar100/uskd/resnet8x4", "data.dataset=digits", "data.image_size=16",
                 "data.crop_padding=2", "data.batch_size=64", "schedule.epochs=2", "train.device=cpu",
                 "train.progress=false", "train.tensorboard=false", f"out_dir={tmp_path}", "name=uskd"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = (tmp_path / "uskd" / "summary.json").read_text()
    assert '"stopped_by": "epochs"' in summary
    cfg = yaml.safe_load((tmp_path / "uskd" / "config.yaml").read_text())
    assert cfg["teacher"]["name"] == "" and cfg["method"]["name"] == "uskd"  # no teacher anywhere
    metrics = [line for line in (tmp_path / "uskd" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert metrics and "uskd_weak" in metrics[-1]
