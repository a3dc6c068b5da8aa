"""Replay teacher cache (FKD-style, Shen & Xing, ECCV 2022): per view, each sample's crop and the
teacher's top-k logits, so that training replays the crop and never runs the teacher.

One view is one pass of the teacher over the training set with the training augmentation of one
epoch; for every dataset index it keeps the crop parameters (:mod:`kdlab.data.crop_replay`) and
the teacher's output on exactly that crop, compactly (:class:`TeacherRows`):

* ``lse`` (float32): the log-sum-exp of the teacher's logits z;
* ``values`` (float16, or float32 with ``dtype``): the log-probabilities ``z - lse`` of the ``k``
  largest logits, with their class ids in ``classes`` (int16, int32 past 32767 classes); with
  ``k = 0`` or ``k >= C`` every class is stored, in class order, and ``classes`` is None.

What a method sees (:func:`rebuild_logits`): the top-k logits ``values + lse`` (the teacher's own
logits up to float16 rounding of the log-probability: an absolute error of at most 2**-11 of
``|z - lse|``, so least for the likeliest classes; float32 storage keeps them to float32
rounding). Every other class gets the same logit ``r``, chosen so that the rebuilt logits keep
the teacher's log-sum-exp: at temperature 1 the non-top-k classes share the remaining
probability ``1 - sum(top-k probabilities)`` evenly (FKD's marginal smoothing). At another
temperature T a method gets the temperature-T softmax of these rebuilt logits, not a smoothing
of the teacher's own temperature-T distribution.

:class:`ReplayTeacherLoader` wraps a training loader that replays the views' crops (``set_replay``)
and adds the rebuilt rows of each batch as ``batch.extra["teacher_logits"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kdlab.data.batch import Batch
from kdlab.data.crop_replay import CropReplay, ViewCrops
from kdlab.data.teacher_cache import TeacherLogitsLoader
from kdlab.errors import KdlabError
from kdlab.safe_load import safe_load

REPLAY = "replay"
FORMAT = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}  # data.cache_dtype: how values are stored


@dataclass
class TeacherRows:
    """The teacher's compressed outputs, one row per sample (see the module doc)."""

    values: Tensor  # (N, k) float16 (or float32) log-probabilities
    classes: Tensor | None  # (N, k) class ids of the top k; None: every class, in order
    lse: Tensor  # (N,) float32

    def rows(self, index: Tensor) -> TeacherRows:
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return TeacherRows(pick(self.values), pick(self.classes), pick(self.lse))


def stores_all(k: int, num_classes: int) -> bool:
    return k <= 0 or k >= num_classes


def compress_logits(logits: Tensor, k: int, dtype: torch.dtype = torch.float16) -> TeacherRows:
    """The rows kept of float logits (B x C) with ``k`` classes (0 or >= C: all), values as ``dtype``."""
    z = logits.float()
    lse = torch.logsumexp(z, dim=1)
    logp = z - lse[:, None]
    if stores_all(k, z.shape[1]):
        return TeacherRows(logp.to(dtype), None, lse)
    top, classes = logp.topk(k, dim=1)
    return TeacherRows(top.to(dtype), classes.to(torch.int16 if z.shape[1] <= 32767 else torch.int32), lse)


def rebuild_logits(rows: TeacherRows, num_classes: int) -> Tensor:
    """Float32 logits (B x C) from compressed rows: top-k as stored, the rest evenly smoothed."""
    lse = rows.lse.float()[:, None]
    logp = rows.values.float()
    if rows.classes is None:
        return logp + lse
    k = logp.shape[1]
    rest = (1 - logp.exp().sum(dim=1, keepdim=True)).clamp(min=1e-30)  # mass of the C - k other classes
    fill = lse + torch.log(rest / (num_classes - k))
    out = fill.expand(-1, num_classes).clone()
    return out.scatter_(1, rows.classes.long(), logp + lse)


@dataclass
class ReplayView:
    """One view: the crops and the teacher's rows, both indexed by dataset index."""

    crops: ViewCrops
    teacher: TeacherRows
    num_classes: int


def view_state(view: ReplayView, fingerprint: str, index: int) -> dict[str, Any]:
    """What one view file holds (tensors, numbers, strings: loadable with ``weights_only``)."""
    state = {"format": FORMAT, "fingerprint": fingerprint, "view": index, "num_classes": view.num_classes,
             "boxes": view.crops.boxes, "flips": view.crops.flips, "values": view.teacher.values,
             "lse": view.teacher.lse}
    if view.teacher.classes is not None:
        state["classes"] = view.teacher.classes
    return state


def read_view(path: Path, fingerprint: str, n: int) -> ReplayView | None:
    """The view saved at ``path`` (memory-mapped) when made for ``fingerprint`` and ``n`` samples."""
    if not path.is_file():
        return None
    try:
        state = safe_load(path, mmap=True)
    except KdlabError:  # a torn or foreign file: recompute
        return None
    keys = ("boxes", "flips", "values", "lse")
    if (not isinstance(state, dict) or state.get("format") != FORMAT or state.get("fingerprint") != fingerprint
            or any(not isinstance(state.get(k), Tensor) or state[k].shape[0] != n for k in keys)):
        return None
    rows = TeacherRows(state["values"], state.get("classes"), state["lse"])
    return ReplayView(ViewCrops(state["boxes"], state["flips"]), rows, int(state["num_classes"]))


def bytes_per_image(num_classes: int, k: int, box_values: int = 4, box_bytes: int = 2, value_bytes: int = 2) -> int:
    """Storage of one sample in one view: crop box + flip + log-sum-exp + the kept classes."""
    if stores_all(k, num_classes):
        kept = num_classes * value_bytes  # log-probabilities, no class ids
    else:
        kept = k * (value_bytes + (2 if num_classes <= 32767 else 4))  # value + int16/int32 class id
    return box_values * box_bytes + 1 + 4 + kept


class ReplayTeacherLoader(TeacherLogitsLoader):
    """A training loader replaying recorded crops, whose batches carry the rebuilt teacher logits.

    ``views``: the cache's views in order; the wrapped loader must replay the same views' crops
    (built here with ``loader.set_replay``). Epoch ``e`` uses view ``(e - 1) mod V``. The rest is
    :class:`~kdlab.data.teacher_cache.TeacherLogitsLoader`'s.
    """

    what = "replay teacher loader"

    def __init__(self, loader: Any, views: list[ReplayView], *, keep_index: bool = True) -> None:
        super().__init__(loader, keep_index=keep_index)
        self.views = views
        self.replay = CropReplay([v.crops for v in views])
        loader.set_replay(self.replay)

    def teacher_logits(self, batch: Batch) -> Tensor:
        view = self.views[self.replay.view_of(batch.epoch)]
        logits = rebuild_logits(view.teacher.rows(batch.index.cpu()), view.num_classes)
        return logits.to(batch.image.device, non_blocking=True)


def storage_line(n: int, views: int, num_classes: int, k: int, box_values: int, value_bytes: int = 2) -> str:
    """A human line on the cache's size (logged when it is built)."""
    per = bytes_per_image(num_classes, k, box_values, value_bytes=value_bytes)
    return f"{per} bytes per image and view, {per * n * views / 2**20:.1f} MiB in all ({views} x {n} images)"

