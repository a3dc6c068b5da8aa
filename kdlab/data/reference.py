"""The reference ("mdistiller way") input pipeline, kept as a benchmarking baseline.

A torch DataLoader over PIL images with per-image torchvision transforms:
RandomCrop(size, padding) + RandomHorizontalFlip + ToTensor + Normalize for training,
ToTensor + Normalize for evaluation; it yields ``(images, targets)`` CPU tensors like
torchvision's CIFAR loaders. It uses torch's global RNG inside the workers, as the reference code
does, so it is not resumable; use :func:`kdlab.data.build_loader` for real runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from kdlab.data.imagesets import ImageSet, TensorImageSet


class PILDataset(Dataset):
    """Item ``i`` of an :class:`ImageSet` as (transform(PIL image), target)."""

    def __init__(self, images: ImageSet, transform: T.Compose) -> None:
        self.images, self.transform = images, transform
        self.targets = images.targets.tolist()
        if len(images) and isinstance(images, TensorImageSet):
            images.pil(0)  # build its H x W x C copy here, once, before workers fork

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images.pil(i)), self.targets[i]


def reference_transform(size: tuple[int, int], *, train: bool, mean: Sequence[float], std: Sequence[float],
                        crop_padding: int = 4, flip: bool = True) -> T.Compose:
    """RandomCrop(size, padding) + RandomHorizontalFlip + ToTensor + Normalize (train)."""
    steps: list = []
    if train and crop_padding:
        steps.append(T.RandomCrop(size, padding=crop_padding))
    if train and flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def build_reference_loader(images: ImageSet, *, batch_size: int, train: bool, mean: Sequence[float],
                           std: Sequence[float], crop_padding: int = 4, flip: bool = True,
                           num_workers: int = 2, seed: int = 0, drop_last: bool = False,
                           pin_memory: bool = False) -> DataLoader:
    """A per-image PIL DataLoader over ``images`` (shuffled when ``train``), as mdistiller builds it."""
    tf = reference_transform(images.image_size, train=train, mean=mean, std=std,
                             crop_padding=crop_padding, flip=flip)
    return DataLoader(PILDataset(images, tf), batch_size=batch_size, shuffle=train, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))
