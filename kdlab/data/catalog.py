"""The dataset registry and what a dataset builder hands back.

A builder is registered with ``@register_dataset("name")`` and called as
``builder(root, download=...)``. It finds its files under ``root`` (raising a one-line
:class:`~kdlab.errors.KdlabError` that names the expected layout when they are missing) and returns
a :class:`RawDataset`: the official train and test splits, class names and normalisation
constants. Caps, subsets, the validation split and decoding into memory are applied afterwards,
the same way for every dataset, by :func:`kdlab.data.build_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kdlab.data.constants import Stats
from kdlab.data.imagesets import ImageSet
from kdlab.registry import Registry


@dataclass
class RawDataset:
    """The official splits of a dataset, as found on disk."""

    train: ImageSet
    test: ImageSet
    classes: list[str]
    stats: Stats
    root: Path  # the folder that holds the data (decoded tensors are cached under it)
    train_source: str  # e.g. "official train split (data_batch_1..5)"
    test_source: str  # e.g. "official test split (test_batch)"


class DatasetBuilder(Protocol):
    def __call__(self, root: Path, *, download: bool) -> RawDataset: ...


DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator adding a dataset builder to :data:`DATASETS` under ``name``."""
    return DATASETS.register(name)


def find_root(root: Path, ok: Callable[[Path], bool], subfolders: Iterable[str] = ()) -> Path | None:
    """``root`` itself or the first ``root/<subfolder>`` for which ``ok`` holds, else None."""
    for cand in (root, *(root / s for s in subfolders)):
        if cand.is_dir() and ok(cand):
            return cand
    return None
