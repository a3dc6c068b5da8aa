"""Per-image transforms for file-backed sets, with randomness from an explicit generator.

The loader gives every sample of an epoch its own seed (drawn from the epoch's generator), so a
sample's crop and flip do not depend on which worker decodes it or where a resumed run starts.
RandomResizedCrop's parameters are drawn the way torchvision draws them, from that generator.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from kdlab.data.decode import fit_pil
from kdlab.data.imagesets import FileImageSet


def resized_crop_params(height: int, width: int, g: torch.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop window, drawn from ``g``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=g).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height  # fallback: the central crop, as torchvision does
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def file_transform(files: FileImageSet, img: Image.Image, *, train: bool, flip: bool,
                   seed: int) -> Tensor:
    """One image of ``files`` as a uint8 3 x H x W tensor at ``files.crop``.

    ``resized_crop`` mode: RandomResizedCrop + flip (train) or Resize + CenterCrop (eval).
    ``fixed`` mode: only brought to the set's size; its augmentation is done batch-wise later.
    """
    if files.mode == "fixed":
        img = fit_pil(img, files.crop)
    elif train:
        g = torch.Generator().manual_seed(seed)
        top, left, h, w = resized_crop_params(img.height, img.width, g)
        img = TF.resized_crop(img, top, left, h, w, list(files.crop), antialias=True)
        if flip and float(torch.rand(1, generator=g)) < 0.5:
            img = TF.horizontal_flip(img)
    else:
        img = TF.center_crop(TF.resize(img, files.resize, antialias=True), list(files.crop))
    return TF.pil_to_tensor(img)
