"""The zoo models test_models.py leaves out (the four ViTs), the ImageNet-scale models from
torchvision / timm (parameter counts and taps at 224 px), and checkpoint files holding a module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.engine.checkpoint import convert_trusted
from kdlab.errors import KdlabError
from kdlab.features import FeatureRecorder, feature_shapes
from kdlab.models import count_parameters, create_model, load_checkpoint

# --------------------------------------------------------------------------------------- ViTs

VITS = {  # name -> (embed dim, input size); patch 4, depth 12, class token
    "vit_tiny_patch4_32": (192, 32),
    "vit_small_patch4_32": (384, 32),
    "vit_tiny_patch4_64": (192, 64),
    "vit_small_patch4_64": (384, 64),
}


def vit_params(dim: int, size: int, classes: int, depth: int = 12, patch: int = 4) -> int:
    """Trainable parameters of a pre-norm ViT with a class token, counted by hand."""
    tokens = (size // patch) ** 2 + 1
    embed = patch * patch * 3 * dim + dim + dim + tokens * dim  # patch conv (+bias), cls token, positions
    block = (2 * dim  # norm1
             + dim * 3 * dim + 3 * dim  # qkv
             + dim * dim + dim  # proj
             + 2 * dim  # norm2
             + dim * 4 * dim + 4 * dim  # fc1
             + 4 * dim * dim + dim)  # fc2
    return embed + depth * block + 2 * dim + dim * classes + classes


@pytest.mark.parametrize("name", sorted(VITS))
def test_vit_parameter_count_and_taps(name):
    dim, size = VITS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=100).eval()
    assert count_parameters(model) == vit_params(dim, size, 100)
    shapes = feature_shapes(model, size)
    tokens = (size // 4) ** 2 + 1
    assert shapes["stages"] == [(tokens, dim)] * 13  # stem tokens + one entry per block
    assert shapes["pooled"] == (dim,) and shapes["logits"] == (100,)
    assert "preact" not in shapes
    with pytest.raises(KdlabError, match="pre-activation"):
        FeatureRecorder(model, {"preact"})
    # pooled is the final-normed class token, the head's input
    rec = FeatureRecorder(model, {"pooled", "logits"})
    with torch.no_grad():
        f = rec(torch.randn(2, 3, size, size))
    rec.remove()
    assert torch.allclose(model.head(f.pooled), f.logits, atol=1e-5)


def test_vit_rejects_another_input_size():
    model = create_model("vit_tiny_patch4_32", num_classes=10, depth=1)
    with pytest.raises(Exception):  # noqa: B017  (timm's own assertion on the image size)
        model(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------------------ ImageNet scale

# Published trainable parameters at 1000 classes: torchvision's model cards (ResNet18 11,689,512,
# ResNet34 21,797,672, ResNet50 25,557,032, MobileNetV2 3,504,872) and MobileNetV1 (4.23M, as the
# mdistiller / timm definition).
IMAGENET = {
    "torchvision:resnet18": (11_689_512, [64, 64, 128, 256, 512], 512),
    "torchvision:resnet34": (21_797_672, [64, 64, 128, 256, 512], 512),
    "torchvision:resnet50": (25_557_032, [64, 256, 512, 1024, 2048], 2048),
    "torchvision:mobilenet_v2": (3_504_872, [32, 24, 32, 96, 320], 1280),
    "timm:mobilenetv1_100": (4_231_976, [64, 128, 256, 512, 1024], 1024),
}


@pytest.mark.parametrize("name", sorted(IMAGENET))
def test_imagenet_models_counts_and_taps_at_224(name):
    params, channels, pooled = IMAGENET[name]
    model = create_model(name, num_classes=1000)
    assert count_parameters(model) == params
    shapes = feature_shapes(model, 224)
    assert [s[0] for s in shapes["stages"]] == channels
    assert [s[1] for s in shapes["stages"]] == [112, 56, 28, 14, 7]
    assert shapes["pooled"] == (pooled,) and shapes["logits"] == (1000,)


# ------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize("layout", ["module", "model-key-module", "dataparallel-module"])
def test_checkpoint_holding_a_pickled_module(tmp_path, layout):
    """A pickled module needs full unpickling: refused (it could run code); converted once on the
    user's word (``convert_trusted``, ``kdlab convert-checkpoint --trust``) it loads with its weights."""
    src = create_model("resnet8", num_classes=10).eval()
    obj = {"module": src, "model-key-module": {"model": src, "epoch": 7},
           "dataparallel-module": nn.DataParallel(src)}[layout]
    torch.save(obj, tmp_path / "m.pth")
    dst = create_model("resnet8", num_classes=10).eval()
    with pytest.raises(KdlabError, match="needs full unpickling .*kdlab convert-checkpoint .* --trust"):
        load_checkpoint(dst, tmp_path / "m.pth")
    meta = load_checkpoint(dst, convert_trusted(tmp_path / "m.pth"))
    assert meta == ({"epoch": 7} if layout == "model-key-module" else {})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_mismatch_message_lists_only_what_is_wrong(tmp_path):
    torch.save(create_model("resnet14", num_classes=10).state_dict(), tmp_path / "r14.pth")
    with pytest.raises(KdlabError) as err:
        load_checkpoint(create_model("resnet8", num_classes=10), tmp_path / "r14.pth")
    msg = str(err.value)
    assert "unexpected keys (layer1.1." in msg
    assert "no missing keys" in msg and "no shape mismatches" in msg  # not "0 missing keys ()"
    assert "()" not in msg
    assert "\n" not in msg
