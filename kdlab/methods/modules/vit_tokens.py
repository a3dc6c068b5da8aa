"""Token features of timm-style Vision Transformers for ViTKD: which modules to hook, and the masking.

A model qualifies when it has ``blocks`` (a sequence of at least two blocks), a final ``norm``,
``num_prefix_tokens`` and ``patch_embed.grid_size`` — every timm ``VisionTransformer``, so the zoo's
``vit_*`` models (:mod:`kdlab.models.vit`) and ``timm:deit_*`` alike. ViTKD reads the **patch
tokens** (prefix tokens dropped) of blocks 0 and 1 and of the final ``norm`` output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.methods.modules.projectors import TapHook


@dataclass(frozen=True)
class TokenLayout:
    grid: tuple[int, int]
    prefix: int
    dim: int


def token_layout(model: nn.Module, method: str, role: str) -> TokenLayout:
    """The patch grid, number of prefix tokens and width of a ViT, or one KdlabError line."""
    blocks = getattr(model, "blocks", None)
    norm = getattr(model, "norm", None)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if (not isinstance(blocks, nn.Sequential) or len(blocks) < 2 or not isinstance(norm, nn.Module)
            or grid is None or prefix is None or isinstance(norm, nn.Identity)):
        raise KdlabError(f"{method} is ViT-only: the {role} {type(model).__name__} has no transformer token "
                         "features (use a ViT pair, e.g. teacher vit_small_patch4_32 -> student vit_tiny_patch4_32)")
    return TokenLayout(tuple(int(g) for g in grid), int(prefix), int(getattr(model, "embed_dim", norm.weight.shape[0])))


class TokenHooks:
    """Hooks on blocks 0, 1 and the final norm; :meth:`pop` returns (B×2×N×D low, B×N×D high) patch tokens."""

    def __init__(self, model: nn.Module, layout: TokenLayout) -> None:
        self.layout = layout
        self.low = [TapHook(model, "blocks.0"), TapHook(model, "blocks.1")]
        self.high = TapHook(model, "norm")

    def pop(self) -> tuple[Tensor, Tensor]:
        p = self.layout.prefix
        low = torch.stack([h.pop()[:, p:] for h in self.low], dim=1)
        return low, self.high.pop()[:, p:]


def random_token_mask(batch: int, tokens: int, ratio: float, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """MAE-style masking as ViTKD: (ids_shuffle, ids_restore, len_keep) from uniform noise (global RNG).

    Tokens ``ids_shuffle[:, :len_keep]`` are kept, the rest masked; ``len_keep = int(N·(1−ratio))``.
    """
    len_keep = int(tokens * (1 - ratio))
    noise = torch.rand(batch, tokens, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle, ids_restore, len_keep
