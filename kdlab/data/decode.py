"""Decode image files into one uint8 tensor, fast on few cores.

JPEGs are read in chunks and decoded with ``torchvision.io.decode_jpeg`` on a list (libjpeg-turbo,
no PIL objects), by a few threads; anything else (PNG, odd JPEGs) falls back to
``torchvision.io.decode_image`` and then PIL. Images whose size differs from the target are either
resized (shorter side, then centre crop) or reported with :class:`SizeMismatch`. A file no decoder
reads is a :class:`~kdlab.data.bad_files.BadImageFile`, raised or recorded as the caller asks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from kdlab.data.bad_files import DECODE_ERRORS, BadImageFile, reason

CHUNK = 512


class SizeMismatch(Exception):
    """An image's size differs from the others' and resizing was not asked for."""

    def __init__(self, path: str, size: tuple[int, int], expected: tuple[int, int]) -> None:
        super().__init__(f"{path} is {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}")
        self.path, self.size, self.expected = path, size, expected


def header_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file, read from its header only."""
    with Image.open(path) as im:
        w, h = im.size
    return h, w


def _size_or_none(path: str) -> tuple[int, int] | None:
    try:
        return header_size(path)
    except DECODE_ERRORS:
        return None  # an unreadable file is dealt with when it is decoded (data.on_bad_file)


def sample_sizes(paths: Sequence[str], k: int = 32) -> set[tuple[int, int]]:
    """Sizes of up to ``k`` evenly spaced readable files (a cheap check that all images agree)."""
    if not paths:
        return set()
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(k, len(paths))).round().astype(int))
    return {s for i in picks if (s := _size_or_none(paths[i])) is not None}


def fit_tensor(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a C x H x W uint8 image so it covers ``size``, then centre-crop to it."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    h, w = img.shape[-2:]
    scale = max(size[0] / h, size[1] / w)
    new = (max(size[0], round(h * scale)), max(size[1], round(w * scale)))
    return TF.center_crop(TF.resize(img, list(new), antialias=True), list(size))


def fit_pil(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL version of :func:`fit_tensor`."""
    if (img.height, img.width) == tuple(size):
        return img
    scale = max(size[0] / img.height, size[1] / img.width)
    new = (max(size[0], round(img.height * scale)), max(size[1], round(img.width * scale)))
    return TF.center_crop(TF.resize(img, list(new), antialias=True), list(size))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tensor(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_one(data: bytes, path: str) -> Tensor | BadImageFile:
    try:
        return decode_image(_tensor(data), mode=ImageReadMode.RGB)
    except RuntimeError:
        try:
            with Image.open(path) as im:
                return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        except DECODE_ERRORS as e:
            return BadImageFile(path, reason(e))


def _decode_many(datas: list[bytes], paths: Sequence[str]) -> list[Tensor | BadImageFile]:
    if all(d[:2] == b"\xff\xd8" for d in datas):
        try:
            return list(decode_jpeg([_tensor(d) for d in datas], mode=ImageReadMode.RGB))
        except RuntimeError:
            pass  # one bad file spoils the batch call: decode one by one below
    return [_decode_one(d, p) for d, p in zip(datas, paths)]


def decode_files(paths: Sequence[str], size: tuple[int, int], *, resize: bool,
                 threads: int | None = None, bad: dict[int, str] | None = None) -> Tensor:
    """Decode ``paths`` into a uint8 tensor N x 3 x H x W with (H, W) = ``size``.

    Images of another size are resized to cover ``size`` and centre-cropped when ``resize`` is
    true; otherwise :class:`SizeMismatch` is raised. An unreadable file raises
    :class:`~kdlab.data.bad_files.BadImageFile` (the first in path order), or, when a ``bad``
    dict is given, is recorded there (position -> reason) and left black.
    """
    out = torch.empty((len(paths), 3, *size), dtype=torch.uint8)
    threads = threads or min(4, len(os.sched_getaffinity(0)))

    def work(start: int) -> None:
        part = paths[start:start + CHUNK]
        imgs = _decode_many([_read(p) for p in part], part)
        for j, img in enumerate(imgs):
            if isinstance(img, BadImageFile):
                if bad is None:
                    raise img
                bad[start + j] = img.reason
                imgs[j] = img = torch.zeros((3, *size), dtype=torch.uint8)
            if tuple(img.shape[-2:]) != tuple(size):
                if not resize:
                    raise SizeMismatch(part[j], tuple(img.shape[-2:]), size)
                imgs[j] = fit_tensor(img, size)
        torch.stack(imgs, out=out[start:start + len(part)])

    starts = range(0, len(paths), CHUNK)
    with warnings.catch_warnings():  # set here, in the calling thread: the workers share the filters
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        if threads <= 1 or len(starts) <= 1:
            for s in starts:
                work(s)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(work, starts))
    return out
