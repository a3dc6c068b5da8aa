"""The two ways a split of images is held: one uint8 tensor, or a list of image files.

:class:`TensorImageSet` keeps every image of a split in one ``uint8`` tensor (N x 3 x H x W); the
loader augments whole batches of it on the training device. :class:`FileImageSet` keeps file paths
and decodes images in DataLoader workers (ImageNet-sized data). Both expose ``targets`` (int64),
``subset`` (index selection, used for class caps, few-sample subsets and the validation split) and
``pil`` (one image as PIL, for the reference per-image pipeline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kdlab.data.bad_files import BadFileLog
from kdlab.data.decode import fit_pil

FileMode = Literal["resized_crop", "fixed"]


def as_index(indices: Sequence[int] | Tensor | np.ndarray) -> Tensor:
    """Indices as a 1-D int64 CPU tensor."""
    return torch.as_tensor(np.asarray(indices, dtype=np.int64)).reshape(-1)


class ImageSet(ABC):
    """A split of labelled RGB images (always 3 channels)."""

    targets: Tensor

    def __len__(self) -> int:
        return int(self.targets.numel())

    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the images a loader yields."""

    @abstractmethod
    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> ImageSet:
        """A new set holding the images at ``indices``, in that order."""

    @abstractmethod
    def pil(self, i: int) -> Image.Image:
        """Image ``i`` as an RGB PIL image."""


class TensorImageSet(ImageSet):
    """Images in one uint8 tensor N x 3 x H x W, targets in an int64 tensor (N,)."""

    def __init__(self, images: Tensor, targets: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
        targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
        if targets.numel() != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {targets.numel()} targets")
        self.images = images
        self.targets = targets
        self._hwc: np.ndarray | None = None
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(images, targets) on ``device``, copied once and shared by every loader of this set."""
        if device not in self._on:
            self._on[device] = (self.images.to(device), self.targets.to(device))
        return self._on[device]

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> TensorImageSet:
        idx = as_index(indices)
        if self.images.device.type == "cpu":  # NumPy's take along axis 0 is several times faster here
            images = torch.from_numpy(self.images.numpy()[idx.numpy()])
        else:
            images = self.images.index_select(0, idx.to(self.images.device))
        return TensorImageSet(images, self.targets.index_select(0, idx.to(self.targets.device)))

    def pil(self, i: int) -> Image.Image:
        if self._hwc is None:  # H x W x C numpy, as torchvision's CIFAR keeps it
            self._hwc = self.images.permute(0, 2, 3, 1).contiguous().numpy()
        return Image.fromarray(self._hwc[i])

    def __repr__(self) -> str:
        return f"TensorImageSet({len(self)} images, {tuple(self.images.shape[1:])})"


@dataclass(frozen=True, eq=False)
class FileImageSet(ImageSet):
    """Image files decoded on demand.

    ``mode`` picks the pipeline: ``"resized_crop"`` (ImageNet: RandomResizedCrop(crop) + flip for
    training, Resize(resize) + CenterCrop(crop) for evaluation) or ``"fixed"`` (every image is
    brought to ``crop`` (H, W) and augmented like a tensor set: padded random crop + flip).
    ``reduced_decode`` lets JPEGs be decoded at 1/2, 1/4, 1/8 size when the crop box allows it
    (:mod:`kdlab.data.transforms`). ``bad_log`` records unreadable files and says what to do with
    them (:mod:`kdlab.data.bad_files`); subsets share it.
    """

    paths: tuple[str, ...]
    targets: Tensor
    crop: tuple[int, int] = (224, 224)
    resize: int = 256
    mode: FileMode = "resized_crop"
    reduced_decode: bool = True
    bad_log: BadFileLog = field(default_factory=BadFileLog, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.paths) != self.targets.numel():
            raise ValueError(f"{len(self.paths)} paths but {self.targets.numel()} targets")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.crop

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> FileImageSet:
        idx = as_index(indices)
        return replace(self, paths=tuple(self.paths[i] for i in idx.tolist()),
                       targets=self.targets.index_select(0, idx))

    def with_size(self, size: int) -> FileImageSet:
        """The same files yielded at ``size`` x ``size`` (eval resize scaled as 256/224)."""
        return replace(self, crop=(size, size), resize=round(size * 256 / 224))

    def pil(self, i: int) -> Image.Image:
        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        return fit_pil(img, self.crop) if self.mode == "fixed" else img

    def __repr__(self) -> str:
        return f"FileImageSet({len(self)} files, mode={self.mode}, crop={self.crop})"
