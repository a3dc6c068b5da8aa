"""``data.decode=gpu``: decode a batch of JPEG files with nvJPEG and crop / resize it on the device.

Workers only read bytes and draw the crop boxes (:class:`kdlab.data.file_samples.FileBytes`); the
main process decodes the whole batch in one ``torchvision.io.decode_jpeg(list, device="cuda")``
call, then crops, resizes (bilinear, antialiased, as ``TF.resized_crop`` on tensors) and flips
each image there. A file nvJPEG refuses is decoded on the CPU (PNG, CMYK JPEG, ...); one that no
decoder reads follows ``data.on_bad_file``: an error line, or (skip) it is counted and replaced
by the next readable image of the same batch (workers cannot see what only the device detects).
The functions take any device, so their logic is tested on the CPU.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from kdlab.data.bad_files import BadFileLog, reason
from kdlab.errors import KdlabError

DECODE_CHOICES = ("cpu", "gpu")


def check_decode(decode: str, device: torch.device) -> None:
    """One line unless ``decode`` is known and, for ``gpu``, a CUDA device is used."""
    if decode == "dali":
        raise KdlabError("data.decode=dali is not supported; use data.decode=gpu (torchvision's nvJPEG "
                         "batch decode on CUDA) or data.decode=cpu")
    if decode not in DECODE_CHOICES:
        raise KdlabError(f"data.decode must be one of {', '.join(DECODE_CHOICES)}; got {decode!r}")
    if decode == "gpu" and (device.type != "cuda" or not torch.cuda.is_available()):
        raise KdlabError(f"data.decode=gpu needs a CUDA device, but the run uses {device.type!r} "
                         f"(CUDA available: {torch.cuda.is_available()}); set data.decode=cpu")


def _decode_all(datas: list[Tensor], device: torch.device) -> list[Tensor | Exception]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities", category=DeprecationWarning)
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass  # one file spoils the batch call: one by one below
        out: list[Tensor | Exception] = []
        for d in datas:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                try:
                    out.append(decode_image(d, mode=ImageReadMode.RGB).to(device))
                except RuntimeError as e:
                    out.append(e)
        return out


def decode_batch(datas: list[Tensor], boxes: Tensor, flips: Tensor, paths: list[str], *,
                 crop: tuple[int, int], device: torch.device, log: BadFileLog) -> tuple[Tensor, list[int]]:
    """(uint8 B x 3 x H x W on ``device``, source position of each output) for one batch.

    ``boxes`` are (top, left, h, w) per image in its own pixels; ``paths`` name the files for
    messages. The source list says which input each output came from (itself, or the next readable
    one when a file was skipped), so the caller can pick targets and indices to match.
    """
    imgs = _decode_all(datas, device)
    good = [k for k, im in enumerate(imgs) if isinstance(im, Tensor)]
    for k, im in enumerate(imgs):
        if not isinstance(im, Tensor):
            log.met(paths[k], reason(im))  # raises under data.on_bad_file=error
    if not good:
        raise KdlabError(f"no readable image in a batch of {len(datas)} files (first: {paths[0]}); "
                         "check the dataset files")
    source = [k if isinstance(imgs[k], Tensor) else next((g for g in good if g > k), good[0])
              for k in range(len(imgs))]
    out = torch.empty((len(imgs), 3, *crop), dtype=torch.uint8, device=device)
    for k, src in enumerate(source):
        top, left, h, w = (int(v) for v in boxes[src])
        x = TF.resized_crop(imgs[src], top, left, h, w, list(crop), antialias=True)
        out[k] = x.flip(-1) if bool(flips[src]) else x
    return out, source
