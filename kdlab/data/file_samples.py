"""What a DataLoader worker does with one key ``(index, seed)`` of a file-backed set.

:class:`FileSamples` decodes and transforms the file (:func:`kdlab.data.transforms.load_sample`,
its random draws from a generator seeded with ``seed``); :class:`FileBytes` (``data.decode=gpu``)
only reads the file's bytes and draws the crop box from the header's size, leaving decoding to the
device (:mod:`kdlab.data.gpu_decode`).

A worker never raises for an unreadable file. It returns a *note* with the sample, which the
loader reads in the main process (:func:`read_note`): with ``data.on_bad_file=error`` the note
names the file and the loader raises one :class:`~kdlab.data.bad_files.BadImageFile` line; with
``skip`` the worker has already served the next readable sample (index + 1, + 2, ..., wrapping)
with the same seed, and the note lists the files it passed over so the loader can count them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from kdlab.data.bad_files import DECODE_ERRORS, BadFileLog, BadImageFile, reason
from kdlab.data.crop_replay import CropReplay
from kdlab.data.imagesets import FileImageSet
from kdlab.data.transforms import eval_box, load_sample, resized_crop_draw

ERROR, SKIP = "error", "skip"


def make_note(kind: str, bad: list[tuple[str, str]]) -> str:
    """``kind`` then one ``path<TAB>reason`` line per bad file; "" when nothing was bad."""
    return "\n".join([kind, *(f"{p}\t{r}" for p, r in bad)]) if bad else ""


def read_note(note: str, log: BadFileLog) -> None:
    """Apply a worker's note in the main process: raise (error) or count (skip) its files."""
    if not note:
        return
    kind, *lines = note.split("\n")
    for line in lines:
        path, _, why = line.partition("\t")
        if kind == ERROR:
            raise BadImageFile(path, why)
        log.met(path, why)


class _Samples(Dataset):
    """Shared part: try index, then the next ones under ``skip``; hand back a note."""

    def __init__(self, files: FileImageSet, train: bool, flip: bool) -> None:
        self.files, self.train, self.flip = files, train, flip
        self.skip = files.bad_log.policy == SKIP
        self.replay: CropReplay | None = None  # recorded crops; keys (index, seed, view) replay them

    def recorded(self, key: tuple[int, ...], j: int) -> tuple[int, int, int, int, bool] | None:
        """The recorded (top, left, h, w, flip) of sample ``j`` when ``key`` names a replayed view."""
        if len(key) < 3 or self.replay is None or not self.train or self.files.mode != "resized_crop":
            return None
        return self.replay.resized_box(key[2], j)

    def __len__(self) -> int:
        return len(self.files)

    def _first_good(self, i: int, load: Callable[[int], Any], blank: Callable[[], Any]) -> tuple[Any, int, str]:
        bad: list[tuple[str, str]] = []
        n = len(self.files)
        for k in range(n if self.skip else 1):
            j = (i + k) % n
            try:
                return load(j), j, make_note(SKIP, bad)
            except BadImageFile as e:
                bad.append((e.path, e.reason))
        return blank(), i, make_note(ERROR, bad[:1] if not self.skip else
                                     [(self.files.paths[i], "no readable image file in this set to replace it")])


class FileSamples(_Samples):
    """key ``(index, seed)`` -> (uint8 3 x H x W image, target, index served, note)."""

    def __getitem__(self, key: tuple[int, ...]) -> tuple[Tensor, int, int, str]:
        i, seed = key[:2]

        def load(j: int) -> Tensor:
            g = torch.Generator().manual_seed(seed) if self.train else None
            return load_sample(self.files.paths[j], self.files, train=self.train, flip=self.flip, g=g,
                               replay=self.recorded(key, j))

        x, j, note = self._first_good(i, load, lambda: torch.zeros((3, *self.files.crop), dtype=torch.uint8))
        return x, int(self.files.targets[j]), j, note


class FileBytes(_Samples):
    """key ``(index, seed)`` -> (file bytes, (top, left, h, w) crop or zeros for eval, flip, target,
    index served, note). The header is read here, so a non-image file is met in the worker; a
    truncated JPEG only when the device decodes it."""

    def __getitem__(self, key: tuple[int, ...]) -> tuple[Tensor, Tensor, bool, int, int, str]:
        i, seed = key[:2]

        def load(j: int) -> tuple[Tensor, Tensor, bool]:
            path = self.files.paths[j]
            try:
                with Image.open(path) as im:
                    w, h = im.size
                with open(path, "rb") as f:
                    data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
            except DECODE_ERRORS as e:
                raise BadImageFile(path, reason(e)) from None
            if not self.train:
                return data, torch.tensor(eval_box_int(h, w, self.files)), False
            rec = self.recorded(key, j)
            if rec is not None:
                return data, torch.tensor(rec[:4]), rec[4]
            top, left, ch, cw, flipped = resized_crop_draw(h, w, torch.Generator().manual_seed(seed), self.flip)
            return data, torch.tensor([top, left, ch, cw]), flipped

        (data, box, flip), j, note = self._first_good(
            i, load, lambda: (torch.zeros(0, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), False))
        return data, box, flip, int(self.files.targets[j]), j, note


def eval_box_int(height: int, width: int, files: FileImageSet) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the evaluation box, rounded to whole pixels (device path)."""
    left, top, right, bottom = eval_box(height, width, files.resize, files.crop)
    t, lft = round(top), round(left)
    return t, lft, max(1, round(bottom) - t), max(1, round(right) - lft)


def stack_images(images: tuple[Tensor, ...] | list[Tensor], channels_last: bool) -> Tensor:
    """N x C x H x W batch of same-sized images, channels-last or contiguous, in shared memory in a worker.

    The workers' crops come out of the resize channels-last (H x W x C in memory): for a
    channels-last model, stacking them that way is a plain copy and the batch needs no reordering
    later; a contiguous batch transposes each image here, in the worker.
    """
    n, (c, h, w) = len(images), images[0].shape
    strides = (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)
    if get_worker_info() is None:
        out = torch.empty_strided((n, c, h, w), strides, dtype=images[0].dtype)
    else:  # as default_collate does: the batch crosses to the main process without a copy
        storage = images[0]._typed_storage()._new_shared(n * c * h * w, device=images[0].device)
        out = images[0].new(storage).as_strided((n, c, h, w), strides)
    return torch.stack(list(images), 0, out=out)


def collate_samples(items: list[tuple], channels_last: bool = False) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """Batch of :class:`FileSamples` items: (images, targets, indices served, notes)."""
    images, targets, index, notes = zip(*items)
    return stack_images(images, channels_last), torch.tensor(targets), torch.tensor(index), list(notes)


def collate_bytes(items: list[tuple]) -> tuple[list[Tensor], Tensor, Tensor, Tensor, Tensor, list[str]]:
    """Batch of :class:`FileBytes` items: the byte tensors stay a list (they differ in length)."""
    data, boxes, flips, targets, index, notes = zip(*items)
    return (list(data), torch.stack(boxes), torch.tensor(flips), torch.tensor(targets),
            torch.tensor(index), list(notes))
