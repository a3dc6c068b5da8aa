"""Small DeiT-style Vision Transformers for 32 px (CIFAR) and 64 px (Tiny-ImageNet) inputs, from timm.

Each is a timm ``VisionTransformer`` with a class token, learned position embeddings, patch size 4
(64 tokens at 32 px, 256 at 64 px), pre-norm blocks, a final LayerNorm and a linear ``head`` on
the class token. Widths follow DeiT: *tiny* = 192-d, 3 heads; *small* = 384-d, 6 heads; depth 12
(``depth=`` overrides it, e.g. for quick tests), stochastic depth 0.1 as DeiT-Ti/S.

Registered: ``vit_tiny_patch4_32``, ``vit_small_patch4_32``, ``vit_tiny_patch4_64``,
``vit_small_patch4_64``. The 32 px models accept only 32×32 inputs (fixed position embeddings),
the 64 px ones only 64×64.

Taps (how tokens fit :class:`kdlab.features.Features`):

* ``stages[0]`` = the tokens entering the first block (patch embedding + class token + position
  embedding; the output of ``norm_pre``, an identity); ``stages[k]`` (k ≥ 1) = the output of block
  ``k-1``. Every stage is a **B×(1+N)×D token tensor, class token first** (not a C×H×W map); the
  patch tokens ``[:, 1:]`` lie on the ``patch_embed.grid_size`` grid in row-major order.
* ``preact`` = none (pre-norm blocks end with a residual sum; there is no closing activation).
* ``pooled`` = the head's input: the class token after the final ``norm`` (B×D); classifier ``head``.
* The final normed tokens (ViTKD's "high" feature) are the output of the module ``norm``;
  methods that need them hook it (see :mod:`kdlab.methods.modules.vit_tokens`).

CNN feature methods reject these models with a one-line error; ``vitkd`` serves ViT pairs.
"""

from __future__ import annotations

from torch import nn

from kdlab.features import Taps
from kdlab.models.registry import register_model

_WIDTHS = {"tiny": (192, 3), "small": (384, 6)}


def vit_taps(model: nn.Module) -> Taps:
    """The taps of a timm VisionTransformer (stem = ``norm_pre`` output, one stage per block)."""
    depth = len(model.blocks)
    return Taps(stages=("norm_pre", *(f"blocks.{i}" for i in range(depth))), preact=(), classifier="head")


def build_vit(num_classes: int, size: str, img_size: int, *, depth: int = 12, drop_path_rate: float = 0.1,
              patch_size: int = 4) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    dim, heads = _WIDTHS[size]
    model = VisionTransformer(img_size=img_size, patch_size=patch_size, num_classes=num_classes, embed_dim=dim,
                              depth=depth, num_heads=heads, mlp_ratio=4.0, qkv_bias=True,
                              drop_path_rate=drop_path_rate, global_pool="token", class_token=True)
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    model.taps = vit_taps(model)
    return model


def _register(name: str, size: str, img_size: int) -> None:
    def factory(num_classes: int = 100, depth: int = 12, drop_path_rate: float = 0.1) -> nn.Module:
        return build_vit(num_classes, size, img_size, depth=depth, drop_path_rate=drop_path_rate)

    factory.__name__ = name
    factory.__doc__ = f"DeiT-style ViT-{size} (patch 4, {img_size} px input) from timm."
    register_model(name)(factory)


for _size in ("tiny", "small"):
    for _img in (32, 64):
        _register(f"vit_{_size}_patch4_{_img}", _size, _img)
