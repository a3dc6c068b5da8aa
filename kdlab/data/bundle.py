"""The :class:`DataBundle` that ``build_dataset`` returns: splits plus what a run needs to know."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdlab.data.bad_files import BadFileLog
from kdlab.data.imagesets import ImageSet


@dataclass
class DataBundle:
    """A dataset ready for training.

    ``train`` and ``val`` are disjoint parts of the official training split (``val`` is a seeded,
    stratified hold-out, None when ``val_fraction == 0``); ``test`` is the official test split, for
    final numbers only. ``splits_note`` says in words where each split comes from. ``bad_files``
    records the unreadable image files met while loading and by the splits' loaders.
    """

    name: str
    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    num_classes: int
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: tuple[int, int]
    channels: int
    splits_note: str
    bad_files: BadFileLog = field(default_factory=BadFileLog)

    def __repr__(self) -> str:
        val = len(self.val) if self.val is not None else 0
        return (f"DataBundle({self.name!r}: train {len(self.train)}, val {val}, test {len(self.test)}, "
                f"{self.num_classes} classes, {self.channels}x{self.image_size[0]}x{self.image_size[1]})")
