"""Model zoo: parameter counts, feature taps, input sizes, create_model/list_models, checkpoints."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from kdlab.errors import KdlabError
from kdlab.features import FeatureRecorder, Taps, feature_shapes
from kdlab.models import count_parameters, create_model, list_models, load_checkpoint

# Trainable parameters at 100 classes: exact integers computed from the reference definitions
# (RepDistiller models/, mdistiller ResNet18, SimKD ShuffleV2_1_5), and the rounded values of
# methods.md section 3.1.
PARAMS = {
    "resnet8": (83_892, 0.08),
    "resnet14": (181_108, 0.18),
    "resnet20": (278_324, 0.28),
    "resnet32": (472_756, 0.47),
    "resnet44": (667_188, 0.67),
    "resnet56": (861_620, 0.86),
    "resnet110": (1_736_564, 1.74),
    "resnet8x4": (1_233_540, 1.23),
    "resnet32x4": (7_433_860, 7.43),
    "wrn_16_1": (180_916, 0.18),
    "wrn_16_2": (703_284, 0.70),
    "wrn_40_1": (569_780, 0.57),
    "wrn_40_2": (2_255_156, 2.26),
    "vgg8": (3_965_028, 3.97),
    "vgg11": (9_277_284, 9.28),
    "vgg13": (9_462_180, 9.46),
    "vgg16": (14_774_436, 14.77),
    "vgg19": (20_086_692, 20.09),
    "MobileNetV2": (812_836, 0.81),
    "ShuffleV1": (949_258, 0.95),
    "ShuffleV2": (1_355_528, 1.36),
    "ShuffleV2_1_5": (2_580_548, 2.58),
    "ResNet18": (11_220_132, 11.22),
    "ResNet50": (23_705_252, 23.71),
}
ZOO = sorted(PARAMS)


def _resnet(w: tuple[int, int, int, int]) -> tuple[list[tuple[int, int, int]], int]:
    return [(w[0], 32, 32), (w[1], 32, 32), (w[2], 16, 16), (w[3], 8, 8)], w[3]


def _wrn(k: int) -> tuple[list[tuple[int, int, int]], int]:
    return [(16, 32, 32), (16 * k, 32, 32), (32 * k, 16, 16), (64 * k, 8, 8)], 64 * k


def _shuffle(c: tuple[int, int, int], pooled: int) -> tuple[list[tuple[int, int, int]], int]:
    return [(24, 32, 32), (c[0], 16, 16), (c[1], 8, 8), (c[2], 4, 4)], pooled


_VGG = ([(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)], 512)

# methods.md section 3.1: stage outputs (C, H, W) at 32x32 and the pooled dimension.
SHAPES = {
    **{f"resnet{d}": _resnet((16, 16, 32, 64)) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _resnet((32, 64, 128, 256)),
    "resnet32x4": _resnet((32, 64, 128, 256)),
    "wrn_16_1": _wrn(1), "wrn_16_2": _wrn(2), "wrn_40_1": _wrn(1), "wrn_40_2": _wrn(2),
    **{f"vgg{d}": _VGG for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": ([(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)], 1280),
    "ShuffleV1": _shuffle((240, 480, 960), 960),
    "ShuffleV2": _shuffle((116, 232, 464), 1024),
    "ShuffleV2_1_5": _shuffle((176, 352, 704), 1024),
    "ResNet18": ([(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)], 512),
    "ResNet50": ([(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)], 2048),
}

# stages whose output is not the output of a ReLU: WRN blocks end in a plain sum, MobileNetV2
# blocks end linearly (stage index -> "what preact is there")
NOT_POST_RELU = {
    **{f"wrn_{d}_{w}": (1, 2, 3) for d, w in ((16, 1), (16, 2), (40, 1), (40, 2))},
    "MobileNetV2": (1, 2, 3, 4),
}
WRN_STEM_IS_CONV = {n for n in ZOO if n.startswith("wrn")}


@functools.cache
def zoo_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=100).eval()


def record(model: nn.Module, x: torch.Tensor, parts=("logits", "stages", "preact", "pooled")):
    rec = FeatureRecorder(model, set(parts))
    try:
        with torch.no_grad():
            return rec(x)
    finally:
        rec.remove()


# ------------------------------------------------------------------------------------------ zoo


VITS = ["vit_small_patch4_32", "vit_small_patch4_64", "vit_tiny_patch4_32", "vit_tiny_patch4_64"]


def test_list_models_is_the_zoo():
    assert sorted(list_models()) == sorted(ZOO + VITS + ["MobileNetV1"])  # ImageNet MV1: test_models_mobilenetv1


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count(name):
    exact, millions = PARAMS[name]
    n = count_parameters(zoo_model(name))
    assert n == exact
    assert round(n / 1e6, 2) == pytest.approx(millions)


@pytest.mark.parametrize("name", ZOO)
def test_tap_shapes_at_32(name):
    model = zoo_model(name)
    assert isinstance(model.taps, Taps)
    stages, pooled = SHAPES[name]
    shapes = feature_shapes(model, 32)
    assert shapes["stages"] == stages
    assert shapes["preact"] == stages
    assert shapes["pooled"] == (pooled,)
    assert shapes["logits"] == (100,)
    # pooled is the classifier's input
    head = model.get_submodule(model.taps.classifier)
    first = head[0] if isinstance(head, nn.Sequential) else head
    assert isinstance(first, nn.Linear) and first.in_features == pooled


@pytest.mark.parametrize("name", ZOO)
def test_preact_relates_to_stage(name):
    model = zoo_model(name)
    torch.manual_seed(1)
    f = record(model, torch.randn(2, 3, 32, 32))
    for i, (pre, stage) in enumerate(zip(f.preact, f.stages)):
        if i in NOT_POST_RELU.get(name, ()):
            continue
        if i == 0 and name in WRN_STEM_IS_CONV:
            assert torch.equal(pre, stage)  # bare conv stem
            continue
        assert torch.equal(pre.clamp(min=0), stage), f"stage {i}"
        assert (pre < 0).any(), f"stage {i}: preact was overwritten by an in-place ReLU"
    if name == "MobileNetV2":  # linear block ends: preact is the stage itself
        for pre, stage in zip(f.preact[1:], f.stages[1:]):
            assert torch.equal(pre, stage)


@pytest.mark.parametrize("name", sorted(NOT_POST_RELU.keys() - {"MobileNetV2"}))
def test_wrn_preact_is_next_bn_output_called_once(name):
    model = zoo_model(name)
    f = record(model, torch.randn(2, 3, 32, 32))
    for i, bn_path in enumerate(model.taps.bn_before_relu, start=1):
        bn = model.get_submodule(bn_path)
        with torch.no_grad():
            assert torch.allclose(f.preact[i], bn(f.stages[i]), atol=1e-6)
    # training mode: the BNs run once per forward (mdistiller re-applies them, section 3.2(d))
    fresh = create_model(name).train()
    rec = FeatureRecorder(fresh, {"preact"})
    rec(torch.randn(4, 3, 32, 32))
    rec.remove()
    for bn_path in fresh.taps.bn_before_relu:
        assert fresh.get_submodule(bn_path).num_batches_tracked.item() == 1


@pytest.mark.parametrize("name", ZOO)
def test_bn_before_relu(name):
    model = zoo_model(name)
    bns = model.taps.bn_before_relu
    if name.startswith("ShuffleV2"):
        assert bns == ()  # half of the stage-end ReLU's input bypasses the block: undefined
        return
    assert len(bns) == len(model.taps.stages) - 1
    stage_channels = [c for c, _, _ in SHAPES[name][0][1:]]
    for path, channels in zip(bns, stage_channels):
        bn = model.get_submodule(path)
        assert isinstance(bn, nn.BatchNorm2d)
        assert bn.num_features == channels


@pytest.mark.parametrize("name", ZOO)
def test_other_input_sizes(name):
    model = zoo_model(name)
    with torch.no_grad():
        for size in (8, 16, 64):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 100)


def test_vgg_pools_after_block3_at_64_only():
    model = zoo_model("vgg8")
    assert feature_shapes(model, 64)["stages"][3:] == [(512, 8, 8), (512, 4, 4)]
    assert feature_shapes(model, 32)["stages"][3:] == [(512, 4, 4), (512, 4, 4)]


def test_num_classes_and_options():
    m = create_model("wrn_16_1", num_classes=7, drop_rate=0.3)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert count_parameters(create_model("MobileNetV2", width_mult=1.0)) == 2_353_060  # SimKD MobileNetV2_1_0
    big = create_model("ResNet18", zero_init_residual=True)
    assert torch.count_nonzero(big.layer1[0].bn2.weight) == 0


def test_option_a_resnets():
    m20 = create_model("resnet20", num_classes=10, shortcut="A")
    m56 = create_model("resnet56", num_classes=10, shortcut="A")
    assert count_parameters(m20) == 269_722
    assert count_parameters(m56) == 853_018
    assert m20.taps.classifier == "linear" and "linear.weight" in m20.state_dict()
    assert feature_shapes(m20, 32)["stages"] == SHAPES["resnet20"][0]
    # option A on a width change at stride 1 (resnet8x4 layer1: 32 -> 64) works too
    assert create_model("resnet8x4", shortcut="A")(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_create_model_errors():
    with pytest.raises(KdlabError, match="resnet20"):
        create_model("resnet21")
    with pytest.raises(KdlabError, match="MobileNetV2"):
        create_model("mobilenetv2")
    with pytest.raises(KdlabError, match="shortcut"):
        create_model("resnet20", shortcutt="A")
    with pytest.raises(KdlabError, match="takes no argument 'shortcut'"):
        create_model("vgg8", shortcut="A")
    with pytest.raises(KdlabError, match="shortcut must be"):
        create_model("resnet20", shortcut="C")
    with pytest.raises(KdlabError, match="num_classes"):
        create_model("resnet20", num_classes=0)


# ----------------------------------------------------------------------------------- checkpoints


def test_load_checkpoint_layouts_and_prefixes(tmp_path):
    src = create_model("resnet8", num_classes=10)
    sd = src.state_dict()
    cases = {
        "raw.pth": (sd, {}),
        "repdistiller.pth": ({"model": sd, "epoch": 240, "accuracy": 70.1}, {"epoch": 240, "accuracy": 70.1}),
        "dataparallel.pth": ({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "best_prec1": 91.0},
                             {"best_prec1": 91.0}),
        "kdlab.pth": ({"student": {f"_orig_mod.{k}": v for k, v in sd.items()}, "epoch": 3}, {"epoch": 3}),
        "both.pth": ({f"module._orig_mod.{k}": v for k, v in sd.items()}, {}),
    }
    x = torch.randn(2, 3, 32, 32)
    src.eval()
    for fname, (obj, meta) in cases.items():
        torch.save(obj, tmp_path / fname)
        dst = create_model("resnet8", num_classes=10).eval()
        assert load_checkpoint(dst, tmp_path / fname) == meta, fname
        with torch.no_grad():
            assert torch.equal(dst(x), src(x)), fname


def test_load_checkpoint_into_wrapped_model(tmp_path):
    src = create_model("resnet8")
    torch.save({"model": src.state_dict()}, tmp_path / "r8.pth")
    wrapped = nn.DataParallel(create_model("resnet8"))
    load_checkpoint(wrapped, tmp_path / "r8.pth")
    assert torch.equal(wrapped.module.fc.weight, src.fc.weight)


def test_load_checkpoint_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(KdlabError, match="nope.pth"):
        load_checkpoint(create_model("resnet8"), path)


def test_load_checkpoint_wrong_architecture(tmp_path):
    path = tmp_path / "r14.pth"
    torch.save({"model": create_model("resnet14").state_dict()}, path)
    with pytest.raises(KdlabError) as err:
        load_checkpoint(create_model("resnet8x4"), path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "unexpected keys (layer1.1." in msg
    assert "shape mismatches" in msg and "conv1.weight: (16, 3, 3, 3) vs (32, 3, 3, 3)" in msg
    assert "missing keys (layer1.0.downsample.0.weight" in msg
    assert msg.count(",") < 40  # listings are capped (about 5 each)


def test_load_checkpoint_wrong_classes_and_non_strict(tmp_path):
    path = tmp_path / "r8c10.pth"
    src = create_model("resnet8", num_classes=10)
    torch.save(src.state_dict(), path)
    with pytest.raises(KdlabError, match=r"fc.weight: \(10, 64\) vs \(100, 64\)"):
        load_checkpoint(create_model("resnet8", num_classes=100), path)
    dst = create_model("resnet8", num_classes=100)
    with pytest.warns(UserWarning, match="fc.weight"):
        load_checkpoint(dst, path, strict=False)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


def test_load_checkpoint_no_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    with pytest.raises(KdlabError, match="holds no state dict"):
        load_checkpoint(create_model("resnet8"), path)


# --------------------------------------------------------------------------------- external


def test_torchvision_resnet_taps():
    model = create_model("torchvision:resnet18", num_classes=10).eval()
    assert model.taps.stages == ("relu", "layer1", "layer2", "layer3", "layer4")
    assert model.taps.classifier == "fc"
    f = record(model, torch.randn(2, 3, 64, 64))
    assert [tuple(s.shape[1:]) for s in f.stages] == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4),
                                                     (512, 2, 2)]
    assert f.pooled.shape == (2, 512) and f.logits.shape == (2, 10)
    # the shared block ReLU's last call is the closing one: relu(preact) is the stage output, and the
    # preact keeps its negative part (in-place ReLUs are switched off)
    for pre, stage in zip(f.preact, f.stages):
        assert torch.equal(pre.clamp(min=0), stage)
        assert (pre < 0).any()
    for path in model.taps.bn_before_relu:
        assert isinstance(model.get_submodule(path), nn.BatchNorm2d)


def test_torchvision_resnet50_and_mobilenet_v2_taps():
    r50 = create_model("torchvision:resnet50", num_classes=1000)
    ends = ("layer1.2", "layer2.3", "layer3.5", "layer4.2")
    assert r50.taps.preact[1:] == tuple(f"{e}.relu:in" for e in ends)
    assert r50.taps.bn_before_relu[0] == "layer1.2.bn3"

    mv2 = create_model("torchvision:mobilenet_v2", num_classes=10).eval()
    f = record(mv2, torch.randn(2, 3, 64, 64))
    assert [s.shape[1] for s in f.stages] == [32, 24, 32, 96, 320]
    assert f.pooled.shape == (2, 1280)
    assert torch.equal(f.preact[0].clamp(0, 6), f.stages[0])  # stem ReLU6
    for pre, stage in zip(f.preact[1:], f.stages[1:]):
        assert torch.equal(pre, stage)  # linear block ends


def test_torchvision_generic_features_taps():
    model = create_model("torchvision:mobilenet_v3_small", num_classes=10)
    shapes = feature_shapes(model, 64)
    assert len(shapes["stages"]) >= 4
    assert [s[1] for s in shapes["stages"]] == sorted({s[1] for s in shapes["stages"]}, reverse=True)
    assert shapes["pooled"] == (576,)


def test_timm_taps():
    model = create_model("timm:mobilenetv1_100", num_classes=10).eval()
    assert model.taps.stages == tuple(d["module"] for d in model.feature_info)
    assert model.taps.classifier == "classifier" and model.taps.preact == ()
    shapes = feature_shapes(model, 64)
    assert shapes["pooled"] == (1024,) and shapes["logits"] == (10,)
    assert [s[0] for s in shapes["stages"]] == [64, 128, 256, 512, 1024]
    with pytest.raises(KdlabError, match="pre-activation"):
        FeatureRecorder(model, {"preact"})

    # timm zero-initialises each block's last BN by default, which would leave no negative preact
    r18 = create_model("timm:resnet18", num_classes=10, zero_init_last=False).eval()
    f = record(r18, torch.randn(2, 3, 64, 64))
    for pre, stage in zip(f.preact, f.stages):
        assert torch.equal(pre.clamp(min=0), stage) and (pre < 0).any()


def test_external_errors(monkeypatch):
    with pytest.raises(KdlabError, match="resnet18"):
        create_model("torchvision:resnet19")
    with pytest.raises(KdlabError, match="timm model"):
        create_model("timm:resnet18xyz")
    with pytest.raises(KdlabError, match="rejected the arguments"):
        create_model("torchvision:resnet18", num_classes=10, foo=1)

    def offline(*_a, **_k):
        raise OSError("[Errno -3] Temporary failure in name resolution\nmore detail")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(KdlabError, match="pretrained weights for torchvision:resnet18") as err:
        create_model("torchvision:resnet18", num_classes=1000, pretrained=True)
    assert "\n" not in str(err.value)

    import timm

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: offline())
    with pytest.raises(KdlabError, match="pretrained weights for timm:resnet18"):
        create_model("timm:resnet18", num_classes=1000, pretrained=True)
