"""VGG with BatchNorm for CIFAR (RepDistiller/mdistiller ``vgg.py``): ``vgg8/11/13/16/19``.

Five conv blocks (each conv 3x3 **with bias** + BN + ReLU), max-pool after blocks 0-2, and after
block 3 only for inputs of 64 px or more (the reference pools there only at exactly 64 px, so a
32x32 input keeps 4x4 maps in blocks 3 and 4), global average pool, ``Linear(512, C)`` named
``classifier``. The names are the reference ones (``block{0..4}.{j}``, ``classifier``), so the
``vgg*_bn`` checkpoints of RepDistiller/mdistiller load as they are; the registry names drop the
``_bn`` as their model dicts do.

The reference applies each block's last ReLU in ``forward`` (``F.relu``); here it is the module
``relu{i}`` (no parameters), so ``"relu{i}:in"`` (= the block output, its last BN) is the stage's
pre-activation and ``block{i}.{last}`` its BN before ReLU. Inner ReLUs are not in place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.features import Taps
from kdlab.models.layers import init_normal_fan_out
from kdlab.models.registry import register_model

CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], in_channels: int) -> nn.Sequential:
    """conv-BN-ReLU repeated, without the final ReLU (the model applies it as ``relu{i}``)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """VGG-BN body of five blocks for 32x32 (or 64x64) inputs; classifier is one linear layer."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 100) -> None:
        super().__init__()
        ins = [3] + [c[-1] for c in cfg[:-1]]
        self.block0 = _block(cfg[0], ins[0])
        self.block1 = _block(cfg[1], ins[1])
        self.block2 = _block(cfg[2], ins[2])
        self.block3 = _block(cfg[3], ins[3])
        self.block4 = _block(cfg[4], ins[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        for i in range(5):
            self.add_module(f"relu{i}", nn.ReLU())
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        init_normal_fan_out(self, linear_std=0.01)

        self.taps = Taps(
            stages=tuple(f"relu{i}" for i in range(5)),
            preact=tuple(f"relu{i}:in" for i in range(5)),
            classifier="classifier",
            bn_before_relu=tuple(f"block{i}.{len(self.get_submodule(f'block{i}')) - 1}" for i in range(1, 5)),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.relu2(self.block2(x))
        x = self.pool2(x)
        x = self.relu3(self.block3(x))
        if h >= 64:
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.classifier(torch.flatten(self.pool4(x), 1))


def _register(name: str) -> None:
    def factory(num_classes: int = 100) -> VGG:
        return VGG(CONFIGS[name], num_classes)

    factory.__name__ = name
    factory.__doc__ = f"{name} with BatchNorm (reference name ``{name}_bn``)."
    register_model(name)(factory)


for _name in CONFIGS:
    _register(_name)
