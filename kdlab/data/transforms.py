"""Per-image transforms for file-backed sets, with randomness from an explicit generator.

ImageNet-style (``resized_crop``) sets follow torchvision's reference recipe exactly:

* training: ``RandomResizedCrop(crop)`` + ``RandomHorizontalFlip``; the crop box is drawn by
  :func:`resized_crop_params`, which makes the same draws, in the same order, as
  ``torchvision.transforms.RandomResizedCrop.get_params`` (so a generator seeded like torch's
  global RNG gives the same box), from the sample's own generator (:mod:`kdlab.data.sample_rng`);
* evaluation: ``Resize(resize)`` (shorter side) + ``CenterCrop(crop)`` (:func:`eval_resize_crop`);
  :func:`eval_box` is the box of the original image that the centre crop keeps, which decides how
  far the JPEG may be reduced.

Both read the JPEG at reduced size when the box allows it (:func:`draft_scale`): libjpeg-turbo
scales by 1/2, 1/4 or 1/8 during decoding when the box still has at least the output's
resolution after that scaling, and the box is mapped to the reduced image (:func:`scaled_box`),
so it is the same box of the original image. A training crop decodes only its box where the
optional extension is built (:mod:`kdlab.data.jpeg_region`), with the same pixels. Outputs are
uint8 3 x H x W tensors; normalisation is done batch-wise later.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from kdlab.data.bad_files import DECODE_ERRORS, BadImageFile, reason
from kdlab.data.decode import fit_pil
from kdlab.data.imagesets import FileImageSet
from kdlab.data.jpeg_region import decode_region, scaled_size

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in original-image pixels


def resized_crop_params(height: int, width: int, g: torch.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop window, drawn from ``g`` as torchvision draws it."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=g).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            return top, left, h, w
    in_ratio = width / height  # fallback: the central crop, as torchvision does
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop_draw(height: int, width: int, g: torch.Generator, flip: bool) -> tuple[int, int, int, int, bool]:
    """A training sample's (top, left, h, w, flipped): the RandomResizedCrop box, then the flip, from ``g``.

    The one place the draw order is written down: the workers' decoding (:func:`load_sample`), the
    device decoding's box reading and a replay cache's recorded crops all call it, so they agree.
    """
    top, left, h, w = resized_crop_params(height, width, g)
    return top, left, h, w, bool(flip and float(torch.rand(1, generator=g)) < 0.5)


def eval_box(height: int, width: int, resize: int, crop: tuple[int, int]) -> Box:
    """The box of the original image that ``Resize(resize)`` + ``CenterCrop(crop)`` keeps."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = resize, int(resize * long / short)  # torchvision's rounding
    new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
    top = int(round((new_h - crop[0]) / 2.0))
    left = int(round((new_w - crop[1]) / 2.0))
    sy, sx = height / new_h, width / new_w
    return left * sx, top * sy, (left + crop[1]) * sx, (top + crop[0]) * sy


def draft_scale(box: Box, out: tuple[int, int]) -> int:
    """The largest JPEG DCT scale (1, 2, 4, 8) that keeps ``box`` at >= ``out`` (H, W) pixels."""
    fit = min((box[2] - box[0]) / out[1], (box[3] - box[1]) / out[0])
    return next((s for s in (8, 4, 2) if fit >= s), 1)


def scaled_box(top: int, left: int, h: int, w: int, s: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Box (top, left, h, w) of the original image in an image decoded at 1/``s`` of size ``size`` (H, W).

    Rounded to whole pixels of the reduced image and clipped to it; the whole decode and the
    partial one cut the same box with it, so their pixels agree.
    """
    t, lf = min(round(top / s), size[0] - 1), min(round(left / s), size[1] - 1)
    bottom, right = min(round((top + h) / s), size[0]), min(round((left + w) / s), size[1])  # each edge rounded
    return t, lf, max(1, bottom - t), max(1, right - lf)


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """(H, W) after torchvision's ``Resize(resize)`` (shorter side to ``resize``)."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def eval_resize_crop(img: Tensor, size: tuple[int, int], resize: int, crop: tuple[int, int]) -> Tensor:
    """``Resize(resize)`` + ``CenterCrop(crop)`` of an image of original ``size`` (H, W), decoded whole or reduced.

    A reduced decode of a side that the scale does not divide ends in a partial pixel (375 rows at
    1/2 are 187.5, stored as 188): the resize then uses the exact scale of the original side, so
    every output pixel samples the same place of the original image as the full-size path does.
    """
    h, w = size
    rh, rw = resized_size(h, w, resize)
    if tuple(img.shape[-2:]) == (h, w):
        return TF.center_crop(TF.resize(img, [rh, rw], antialias=True), list(crop))
    s = round(w / img.shape[-1])  # the decoder's scale: the stored side is ceil(side / s)
    x = F.interpolate(img[None], scale_factor=(rh * s / h, rw * s / w), mode="bilinear", antialias=True,
                      recompute_scale_factor=False)[0]
    top, left = int(round((rh - crop[0]) / 2.0)), int(round((rw - crop[1]) / 2.0))  # CenterCrop's offsets
    return x[:, top:top + crop[0], left:left + crop[1]]


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) read from a JPEG's frame header (SOFn marker), or None when ``data`` is no JPEG it can parse.

    A few microseconds of marker walking instead of opening the file with PIL just for its size.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..15 but DHT, JPG, DAC
            if i + 9 > n:
                return None
            h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (h, w) if h and w else None
        if marker == 0xDA:  # a scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def decode_tensor(data: bytes, im: Image.Image | None, scale: int) -> Tensor:
    """The image as uint8 3 x H x W (channels-last memory), decoded at 1/``scale`` size.

    ``scale`` 1: ``torchvision.io.decode_jpeg`` (libjpeg-turbo) for JPEGs, else PIL. ``scale`` > 1:
    PIL's draft mode, where libjpeg-turbo scales in the DCT domain. ``im``: the file already opened
    with PIL, or None to open ``data`` only when PIL is needed.
    """
    if scale == 1 and data[:2] == b"\xff\xd8":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities",
                                    category=DeprecationWarning)
            try:
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError:
                pass  # CMYK or damaged: PIL says which
    with Image.open(io.BytesIO(data)) if im is None else contextlib.nullcontext(im) as pil:
        if scale > 1:
            w, h = pil.size
            pil.draft("RGB", (w // scale, h // scale))  # PIL picks min(w // size_w, h // size_h): exactly scale
        rgb = pil.convert("RGB")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def load_sample(path: str, files: FileImageSet, *, train: bool, flip: bool,
                g: torch.Generator | None, replay: tuple[int, int, int, int, bool] | None = None) -> Tensor:
    """File ``path`` of ``files`` as a uint8 3 x H x W tensor at ``files.crop`` (see module doc).

    ``replay`` (training): a recorded ``(top, left, h, w, flip)`` used instead of drawing from ``g``.

    The crop and resize run on uint8 tensors (torch's antialiased bilinear kernel, a port of
    PIL's, within one grey level of it and faster). A JPEG's size comes from its header
    (:func:`jpeg_size`), so PIL is not opened at all on the common path. ``fixed`` mode: only
    brought to the set's size; its augmentation is done batch-wise later. Raises
    :class:`~kdlab.data.bad_files.BadImageFile` when the file cannot be decoded.
    """
    out = files.crop
    try:
        with open(path, "rb") as f:
            data = f.read()
        if files.mode == "fixed":
            with Image.open(io.BytesIO(data)) as im:
                return TF.pil_to_tensor(fit_pil(im.convert("RGB"), out))
        size = jpeg_size(data)
        with contextlib.ExitStack() as stack:
            im = None
            if size is None:  # not a JPEG (or an odd one): PIL reads the header
                im = stack.enter_context(Image.open(io.BytesIO(data)))
                size = (im.size[1], im.size[0])
            h, w = size
            if train:
                top, left, ch, cw, flipped = replay if replay is not None else resized_crop_draw(h, w, g, flip)
                box: Box = (left, top, left + cw, top + ch)
            else:
                box = eval_box(h, w, files.resize, out)
            jpeg = data[:2] == b"\xff\xd8"
            s = draft_scale(box, out) if files.reduced_decode and jpeg else 1
            region = None
            if train and jpeg:  # only the box, where the extension is built
                size = scaled_size(h, w, s)
                region = decode_region(data, s, *scaled_box(top, left, ch, cw, w / size[1], size))
            img = decode_tensor(data, im, s) if region is None else None
        if train:
            if region is None:
                size = tuple(img.shape[-2:])  # the decoder's own scale (1 when it could not reduce)
                t, lf, rh, rw = scaled_box(top, left, ch, cw, w / size[1], size)
                region = img[:, t:t + rh, lf:lf + rw]
            x = TF.resize(region, list(out), antialias=True)
            if flipped:
                x = x.flip(-1)
        else:
            x = eval_resize_crop(img, (h, w), files.resize, out)
        return x  # channels-last memory as the resize leaves it: the loader stacks it so (collate_samples)
    except DECODE_ERRORS as e:
        raise BadImageFile(path, reason(e)) from None
