"""MobileNetV1 as mdistiller defines it: parameter count, module names, feature taps, any input size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kdlab
from kdlab.features import FeatureRecorder, feature_shapes
from kdlab.models import count_parameters, load_checkpoint

# mdistiller's MobileNetV1: (in, out, stride) of the 13 depthwise-separable blocks, written out here
MDISTILLER_BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
                     *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]


def analytic_params(num_classes: int) -> int:
    """Trainable parameters of mdistiller's definition, counted by hand (no conv bias; BN: 2 per channel)."""
    total = 3 * 3 * 3 * 32 + 2 * 32  # stem conv3x3 + BN
    for cin, cout, _ in MDISTILLER_BLOCKS:
        total += 9 * cin + 2 * cin  # depthwise 3x3 + BN
        total += cin * cout + 2 * cout  # pointwise 1x1 + BN
    return total + 1024 * num_classes + num_classes  # fc


def test_parameter_count_matches_the_published_4_2m_and_a_count_by_hand():
    m = kdlab.create_model("MobileNetV1", num_classes=1000)
    assert count_parameters(m) == analytic_params(1000) == 4_231_976  # "4.2M" (Howard et al. 2017, Table 1)
    assert count_parameters(kdlab.create_model("MobileNetV1", num_classes=365)) == analytic_params(365)
    assert "MobileNetV1" in kdlab.list_models()


def test_module_names_are_mdistillers_so_its_checkpoints_load(tmp_path):
    m = kdlab.create_model("MobileNetV1", num_classes=1000)
    keys = set(m.state_dict())
    # mdistiller: self.model = Sequential(conv_bn, conv_dw x 13, AvgPool2d); conv_dw = (dw, bn, relu, pw, bn, relu)
    expected = {"model.0.0.weight", "fc.weight", "fc.bias"}
    for i in range(1, 14):
        expected |= {f"model.{i}.0.weight", f"model.{i}.1.weight", f"model.{i}.3.weight", f"model.{i}.4.running_var"}
    assert expected <= keys
    assert not any(k.startswith("model.14") for k in keys)  # the pooling layer has no state
    # a file in mdistiller's student_best layout ({"model": state}) from another instance loads exactly
    other = kdlab.create_model("MobileNetV1", num_classes=1000)
    torch.save({"model": other.state_dict()}, tmp_path / "student_best")
    load_checkpoint(m, tmp_path / "student_best")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), other.state_dict().values()))


def test_shapes_at_224_are_the_references_feature_maps():
    m = kdlab.create_model("MobileNetV1", num_classes=1000)
    shapes = feature_shapes(m, 224)
    assert shapes["stages"][1:] == [(128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    assert shapes["stages"][0] == (32, 112, 112)
    assert shapes["pooled"] == (1024,) and shapes["logits"] == (1000,)


def test_taps_equal_mdistillers_forward_and_any_input_size_works():
    torch.manual_seed(0)
    m = kdlab.create_model("MobileNetV1", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    rec = FeatureRecorder(m, {"logits", "stages", "preact", "pooled"})
    with torch.no_grad():
        f = rec(x)
        # mdistiller's forward, written out: each stage end taken before its closing ReLU
        seq = m.model
        feat1 = seq[3][:-1](seq[0:3](x))
        feat2 = seq[5][:-1](seq[4:5](F.relu(feat1)))
        feat3 = seq[11][:-1](seq[6:11](F.relu(feat2)))
        feat4 = seq[13][:-1](seq[12:13](F.relu(feat3)))
        pooled = F.relu(feat4).mean(dim=(2, 3))
        logits = m.fc(pooled)
    for got, want in zip(f.preact[1:], (feat1, feat2, feat3, feat4)):
        torch.testing.assert_close(got, want)
    for got, want in zip(f.stages[1:], (feat1, feat2, feat3, feat4)):
        torch.testing.assert_close(got, F.relu(want))
    torch.testing.assert_close(f.pooled, pooled)
    torch.testing.assert_close(f.logits, logits)
    # bn_before_relu: the BN whose output is each stage's pre-activation
    bns = [m.get_submodule(p) for p in m.taps.bn_before_relu]
    assert [bn.num_features for bn in bns] == [128, 256, 512, 1024]
    assert all(isinstance(bn, torch.nn.BatchNorm2d) for bn in bns)


@pytest.mark.parametrize("size", [32, 224])
def test_pooling_is_global_so_224_matches_the_references_avgpool7(size):
    m = kdlab.create_model("MobileNetV1", num_classes=5).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        body = m.model[:-1](x)
        want = m.fc(F.avg_pool2d(body, body.shape[-1]).flatten(1))  # AvgPool2d(7) at 224 px
        torch.testing.assert_close(m(x), want)
    assert body.shape[-1] == size // 32
