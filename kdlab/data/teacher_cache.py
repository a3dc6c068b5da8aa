"""Cached teacher outputs: the teacher runs once per training image, before training.

Few-teacher-inference KD (Comparative KD, Wilf et al.) queries the teacher once per training
sample and trains the student from the stored logits. :func:`compute_teacher_logits` runs the
teacher in eval mode, without gradients, in batches, over a training :class:`ImageSet` in index
order; :class:`CachedTeacherLoader` wraps any training loader that yields ``batch.index`` and puts
the rows of the batch's images into ``batch.extra["teacher_logits"]``, which
:meth:`kdlab.methods.base.Distiller.teacher_features` uses instead of a teacher forward.

Which view the teacher sees (``view``):

* ``"augmented"`` (CompKD's ``CachedSubset``) — one training-style augmentation per image (padded
  random crop + flip, or RandomResizedCrop + flip for ImageNet-style file sets), drawn once from a
  generator seeded by ``seed`` alone, so a rerun caches the same logits;
* ``"clean"`` — the un-augmented image.

``"replay"`` (FKD-style, :mod:`kdlab.data.replay_cache`) stores V training-style crops per image
with the teacher's top-k logits and replays each crop for the student instead.

Caveat (Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", CVPR
2022): with a cache the student and the teacher no longer see the same view of an image — the
student gets a fresh augmentation every step, the teacher's logits belong to one fixed view (or
the clean image). Beyer et al. find such inconsistent targets distil worse than a teacher queried
on the student's own view; the cache trades that for one teacher pass over the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.data.batch import Batch
from kdlab.data.imagesets import ImageSet
from kdlab.data.loader import build_loader
from kdlab.errors import KdlabError
from kdlab.safe_load import safe_load

VIEWS = ("augmented", "clean")
CACHE_VIEWS = (*VIEWS, "replay")  # every data.cache_view; replay: kdlab.data.replay_cache
CACHE_EPOCH = 0  # the loader's epoch whose draws make the cached view; training epochs start at 1


def compute_teacher_logits(teacher: nn.Module, images: ImageSet, *, view: str = "augmented", seed: int = 0,
                           batch_size: int = 256, device: torch.device | str = "cpu",
                           mean: Sequence[float], std: Sequence[float], crop_padding: int = 4,
                           flip: bool = True, channels_last: bool = False, num_workers: int = 2,
                           autocast: Any = None) -> Tensor:
    """Float32 logits (N x classes, on CPU) of ``teacher`` for every image of ``images``, row i = image i.

    The teacher is put in eval mode and called once per image (in batches of ``batch_size``) under
    ``torch.no_grad``; its training mode is restored afterwards. ``autocast`` is an optional
    context-manager factory (the run's mixed-precision policy).
    """
    if view not in VIEWS:
        raise KdlabError(f"data.cache_view must be one of {', '.join(VIEWS)}; got {view!r}")
    loader = build_loader(images, batch_size=batch_size, train=False, augment=view == "augmented",
                          device=device, mean=mean, std=std, crop_padding=crop_padding, flip=flip,
                          with_index=True, seed=seed, channels_last=channels_last, num_workers=num_workers)
    loader.set_epoch(CACHE_EPOCH)
    was_training = teacher.training
    teacher.eval()
    out: Tensor | None = None
    try:
        with torch.no_grad():
            for batch in loader:
                if autocast is not None:
                    with autocast():
                        z = teacher(batch.image)
                else:
                    z = teacher(batch.image)
                z = z.float().cpu()
                if out is None:
                    out = torch.empty(len(images), z.shape[1], dtype=torch.float32)
                out[batch.index.cpu()] = z
    finally:
        teacher.train(was_training)
    if out is None:
        raise KdlabError("cannot cache teacher logits of an empty training set")
    return out


def cache_fingerprint(**facts: Any) -> str:
    """A short hash of what the cached logits depend on (data, teacher checkpoint, view, seed)."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cached_logits(path: Path, fingerprint: str, n: int) -> Tensor | None:
    """The logits saved at ``path`` when they were made for ``fingerprint`` and ``n`` images."""
    if not path.is_file():
        return None
    try:
        state = safe_load(path)
    except KdlabError:  # a torn or foreign file: recompute
        return None
    logits = state.get("logits") if isinstance(state, dict) else None
    if state.get("fingerprint") != fingerprint or logits is None or logits.shape[0] != n:
        return None
    return logits


def save_cached_logits(path: Path, fingerprint: str, logits: Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": fingerprint, "logits": logits}, tmp)
    tmp.replace(path)


class TeacherLogitsLoader:
    """A training loader whose batches carry ``extra["teacher_logits"]`` for their ``index``.

    Everything else (``len``, ``set_epoch``, attributes) is the wrapped loader's; ``keep_index``
    False drops ``batch.index`` again when the method did not ask for it. Subclasses say where
    the logits of a batch come from (:meth:`teacher_logits`).
    """

    what = "cached-teacher loader"  # how its errors name it

    def __init__(self, loader: Any, *, keep_index: bool = True) -> None:
        if not getattr(loader, "with_index", True):
            raise KdlabError(f"the {self.what} needs a training loader built with with_index=True")
        self.loader = loader
        self.keep_index = keep_index

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)

    def teacher_logits(self, batch: Batch) -> Tensor:
        """The teacher's logits for the rows of ``batch.index``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            if batch.index is None:
                raise KdlabError(f"the {self.what} got a batch without indices")
            batch.extra["teacher_logits"] = self.teacher_logits(batch)
            if not self.keep_index:
                batch.index = None
            yield batch


class CachedTeacherLoader(TeacherLogitsLoader):
    """Logits of one cached view per image (``teacher_logits.pt``), looked up by ``batch.index``."""

    def __init__(self, loader: Any, logits: Tensor, *, keep_index: bool = True) -> None:
        super().__init__(loader, keep_index=keep_index)
        device = getattr(loader, "device", None)
        self.logits = logits.to(device) if device is not None else logits

    def teacher_logits(self, batch: Batch) -> Tensor:
        idx = batch.index.to(self.logits.device)
        return self.logits.index_select(0, idx).to(batch.image.device)
