"""Teacher caches wired into an experiment: one fixed view per image, or replayed crops (FKD-style).

``data.cache_teacher=true`` runs the teacher before training and never during it. What it sees
(``data.cache_view``):

* ``augmented`` | ``clean``: one view per image (:mod:`kdlab.data.teacher_cache`), logits N x C in
  ``<run_dir>/teacher_logits.pt``; the student keeps its fresh augmentation every epoch;
* ``replay``: ``data.cache_views`` = V views; view v is the training loader's own epoch v + 1
  augmentation, and for each sample the cache keeps that crop and the teacher's top
  ``data.cache_topk`` logits (0: all) in ``<run_dir>/teacher_replay/view<v>.pt``
  (:mod:`kdlab.data.replay_cache`). Training epoch e replays view (e - 1) mod V: the student is
  shown exactly the crop whose teacher logits it gets. docs/teacher-cache.md says when that equals
  online distillation.

Every file carries a fingerprint of the data, the teacher checkpoint, the seed (and V, k for
replay); a rerun or a resume with the same fingerprint reads it instead of running the teacher.
Under torchrun rank 0 computes the single-view cache while the others wait; a replay cache is
computed by every rank on its share of whole evaluation batches (batch b on rank b mod world) and
gathered, so rank 0 writes the same files as one process would.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config import Config
from kdlab.data import DataBundle, FileImageSet, TensorImageSet, build_loader
from kdlab.data.crop_replay import (
    CropReplay,
    ViewCrops,
    compact_boxes,
    image_sizes,
    replays_resized_crops,
    resized_view_crops,
    tensor_view_crops,
)
from kdlab.data.replay_cache import (
    DTYPES,
    REPLAY,
    ReplayTeacherLoader,
    ReplayView,
    TeacherRows,
    compress_logits,
    read_view,
    storage_line,
    view_state,
)
from kdlab.data.teacher_cache import (
    CACHE_VIEWS,
    CachedTeacherLoader,
    cache_fingerprint,
    compute_teacher_logits,
    load_cached_logits,
    save_cached_logits,
)
from kdlab.engine import distributed
from kdlab.engine.checkpoint import atomic_write
from kdlab.engine.device import DevicePolicy
from kdlab.errors import KdlabError
from kdlab.methods.base import Distiller

log = logging.getLogger("kdlab")

TEACHER_CACHE_FILE = "teacher_logits.pt"
REPLAY_DIR = "teacher_replay"


def check_teacher_cache(cfg: Config, cls: type[Distiller] | Distiller) -> None:
    """Cached teacher outputs are logits of an eval-mode teacher: refuse methods that need more.

    Checked on the method class before any data is loaded, and again on the built distiller,
    whose needs may depend on its hyper-parameters (e.g. a ``compose`` with a feature part).
    """
    d = cfg.data
    if d.cache_view not in CACHE_VIEWS:
        raise KdlabError(f"data.cache_view must be one of {', '.join(CACHE_VIEWS)}; got {d.cache_view!r}")
    if not cls.uses_teacher:
        return  # nothing to cache; build_experiment notes it
    extra = sorted(set(cls.needs.teacher) - {"logits"})
    if extra or cls.teacher_mode != "eval":
        what = f"teacher {', '.join(extra)}" if extra else f"a teacher in {cls.teacher_mode} mode"
        raise KdlabError(f"data.cache_teacher caches teacher logits only, but method {cfg.method.name!r} needs "
                         f"{what}; set data.cache_teacher=false")
    if d.cache_view != REPLAY:
        return
    kind = getattr(cls, "loader_kind", "images")
    if kind != "images":
        raise KdlabError(f"data.cache_view=replay replays single-image crops, but method {cfg.method.name!r} trains "
                         f"on {kind!r} batches; use data.cache_view=augmented or clean")
    if d.per_class:
        raise KdlabError(f"data.cache_view=replay records one crop per image and view, but data.per_class="
                         f"{d.per_class} may serve an image twice in an epoch; set data.per_class=0 or use "
                         "data.cache_view=augmented")


def images_digest(images: Any) -> str:
    if isinstance(images, TensorImageSet):
        return f"{tuple(images.images.shape)}:{int(images.images.sum())}:{int(images.targets.sum())}"
    if isinstance(images, FileImageSet):
        return cache_fingerprint(paths=images.paths, crop=images.crop, mode=images.mode)
    return f"{type(images).__name__}:{len(images)}"


def cache_facts(cfg: Config, data: DataBundle, policy: DevicePolicy) -> dict[str, Any]:
    """What any teacher cache of this run depends on (data, teacher checkpoint, view, seed, precision)."""
    d, ck = cfg.data, cfg.teacher.checkpoint
    st = Path(ck).expanduser().stat() if ck else None
    return dict(
        data=[d.dataset, str(Path(d.root).expanduser().resolve()), d.subset_size, d.limit_per_class, d.image_size,
              d.val_fraction, d.split_seed, d.stratify, d.crop_padding, d.flip, list(data.mean), list(data.std)],
        images=images_digest(data.train), teacher=[cfg.teacher.name, cfg.teacher.kwargs, ck, cfg.teacher.weights,
                                                   st.st_size if st else None, st.st_mtime_ns if st else None],
        view=d.cache_view, seed=cfg.train.seed, amp=str(policy.amp_dtype))


def attach_teacher_cache(cfg: Config, data: DataBundle, distiller: Distiller, teacher: nn.Module | None,
                         policy: DevicePolicy, train_loader: Any, run_dir: Path) -> Any:
    """The training loader with the cache's teacher logits in its batches (``data.cache_teacher``)."""
    check_teacher_cache(cfg, distiller)
    if teacher is None:
        log.info("data.cache_teacher: method %r uses no teacher; nothing to cache", cfg.method.name)
        return train_loader
    if cfg.data.cache_view == REPLAY:
        views = replay_views(cfg, data, teacher, policy, train_loader, run_dir)
        return ReplayTeacherLoader(train_loader, views, keep_index=distiller.needs_index)
    logits = cached_teacher_logits(cfg, data, teacher, policy, run_dir)
    return CachedTeacherLoader(train_loader, logits, keep_index=distiller.needs_index)


# ---- one view per image -------------------------------------------------------------------------

def cached_teacher_logits(cfg: Config, data: DataBundle, teacher: nn.Module, policy: DevicePolicy,
                          run_dir: Path) -> torch.Tensor:
    """The teacher's logits for every training image, from ``run_dir`` when it holds them, else computed."""
    fp = cache_fingerprint(**cache_facts(cfg, data, policy))
    path = run_dir / TEACHER_CACHE_FILE
    if not distributed.is_main():  # rank 0 loads or computes the cache and writes it; the others read it
        distributed.barrier()
        logits = load_cached_logits(path, fp, len(data.train))
        if logits is None:
            raise KdlabError(f"rank {distributed.rank()}: the teacher cache {path} written by rank 0 is missing")
        return logits
    logits = _main_cached_logits(cfg, data, teacher, policy, path, fp)
    distributed.barrier()
    return logits


def _prepare(teacher: nn.Module, policy: DevicePolicy) -> None:
    teacher.to(policy.device)
    if policy.channels_last:
        teacher.to(memory_format=torch.channels_last)


def _main_cached_logits(cfg: Config, data: DataBundle, teacher: nn.Module, policy: DevicePolicy, path: Path,
                        fp: str) -> torch.Tensor:
    d = cfg.data
    logits = load_cached_logits(path, fp, len(data.train))
    if logits is not None:
        log.info("teacher cache: loaded %d cached teacher logits from %s", len(logits), path)
        return logits
    _prepare(teacher, policy)
    logits = compute_teacher_logits(
        teacher, data.train, view=d.cache_view, seed=cfg.train.seed, batch_size=d.eval_batch_size,
        device=policy.device, mean=data.mean, std=data.std, crop_padding=d.crop_padding, flip=d.flip,
        channels_last=policy.channels_last, num_workers=d.num_workers,
        autocast=policy.autocast)
    save_cached_logits(path, fp, logits)
    log.info("teacher cache: ran the teacher once on %d training images (%s view), saved to %s",
             len(logits), d.cache_view, path)
    return logits


# ---- replayed crops -----------------------------------------------------------------------------

def view_path(run_dir: Path, v: int) -> Path:
    return run_dir / REPLAY_DIR / f"view{v:04d}.pt"


def replay_views(cfg: Config, data: DataBundle, teacher: nn.Module, policy: DevicePolicy, train_loader: Any,
                 run_dir: Path) -> list[ReplayView]:
    """The V views of the replay cache, read from ``run_dir`` where valid, the missing ones computed."""
    d, n = cfg.data, len(data.train)
    if d.cache_topk > data.num_classes:
        raise KdlabError(f"data.cache_topk={d.cache_topk} exceeds the {data.num_classes} classes; use at most "
                         f"{data.num_classes} (or 0 for all)")
    if d.cache_views > cfg.schedule.epochs:
        log.warning("data.cache_views=%d exceeds schedule.epochs=%d: views %d..%d are computed but never replayed",
                    d.cache_views, cfg.schedule.epochs, cfg.schedule.epochs, d.cache_views - 1)
    base = cache_fingerprint(**cache_facts(cfg, data, policy), views=d.cache_views, topk=d.cache_topk,
                             dtype=d.cache_dtype, decode=[d.decode, d.reduced_decode])
    fps = [cache_fingerprint(base=base, view=v) for v in range(d.cache_views)]
    missing = None
    if distributed.is_main():
        missing = [v for v in range(d.cache_views) if read_view(view_path(run_dir, v), fps[v], n) is None]
    missing = distributed.broadcast_object(missing)
    if missing:
        _build_views(cfg, data, teacher, policy, train_loader, missing, fps, run_dir)
    distributed.barrier()
    views = [read_view(view_path(run_dir, v), fps[v], n) for v in range(d.cache_views)]
    if any(v is None for v in views):
        raise KdlabError(f"rank {distributed.rank()}: a teacher replay view in {run_dir / REPLAY_DIR} written by "
                         "rank 0 is missing or unreadable")
    log.info("teacher replay cache: %d view(s) (%d computed now) in %s; %s", d.cache_views, len(missing),
             run_dir / REPLAY_DIR, storage_line(n, d.cache_views, data.num_classes, d.cache_topk,
                                                views[0].crops.boxes.shape[1], DTYPES[d.cache_dtype].itemsize))
    return views


def _my_rows(n: int, batch_size: int) -> torch.Tensor:
    """This rank's dataset indices: the whole evaluation batches b with b mod world == rank."""
    r, w = distributed.rank(), distributed.world_size()
    parts = [torch.arange(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)][r::w]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def _build_views(cfg: Config, data: DataBundle, teacher: nn.Module, policy: DevicePolicy, train_loader: Any,
                 missing: list[int], fps: list[str], run_dir: Path) -> None:
    """Run the teacher over this rank's rows for each missing view; rank 0 gathers and writes the files."""
    d, n = cfg.data, len(data.train)
    mine = _my_rows(n, d.eval_batch_size)
    resized = replays_resized_crops(data.train)
    sizes = image_sizes(data.train, mine, d.num_workers) if resized else None
    crops: list[ViewCrops] = []
    for v in missing:  # view v = the training loader's own draws for epoch v + 1
        if resized:
            crops.append(resized_view_crops(sizes, cfg.train.seed, v + 1, mine, d.flip))
        else:
            crops.append(tensor_view_crops(train_loader.plan(v + 1), n, d.flip).rows(mine))
    loader = build_loader(  # this rank's rows in order, augmented by replaying the crops just drawn
        data.train.subset(mine), batch_size=d.eval_batch_size, train=False, augment=True, device=policy.device,
        mean=data.mean, std=data.std, crop_padding=d.crop_padding, flip=d.flip, with_index=True,
        seed=cfg.train.seed, channels_last=policy.channels_last, num_workers=d.num_workers, decode=d.decode,
        pin_memory=d.pin_memory, prefetch=d.prefetch, persistent_workers=False)
    loader.set_replay(CropReplay(crops))
    _prepare(teacher, policy)
    was_training = teacher.training
    teacher.eval()
    try:
        for m, v in enumerate(missing):
            loader.set_epoch(m + 1)  # replays crops[m]
            rows, served = _teacher_rows(teacher, loader, policy, d.cache_topk, data.num_classes,
                                         DTYPES[d.cache_dtype])
            _gather_and_write(rows, mine[served], crops[m], mine, n, data.num_classes, fps[v], v, run_dir, policy)
    finally:
        teacher.train(was_training)


def _teacher_rows(teacher: nn.Module, loader: Any, policy: DevicePolicy, k: int, num_classes: int,
                  dtype: torch.dtype) -> tuple[TeacherRows, torch.Tensor]:
    """The compressed teacher rows of one pass of ``loader`` and the positions they belong to."""
    parts, served = [], []
    with torch.no_grad():
        for batch in loader:
            with policy.autocast():  # a no-op when AMP is off
                z = teacher(batch.image)
            parts.append(compress_logits(z.float(), k, dtype))
            served.append(batch.index.cpu())
    if not parts:
        return compress_logits(torch.zeros(0, num_classes), k, dtype), torch.zeros(0, dtype=torch.int64)
    cat = lambda ts: None if ts[0] is None else torch.cat(ts).cpu()  # noqa: E731
    rows = TeacherRows(cat([p.values for p in parts]), cat([p.classes for p in parts]), cat([p.lse for p in parts]))
    return rows, torch.cat(served)


def _gather(t: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    """All ranks' rows of ``t`` (any dtype: sent as bytes), concatenated in rank order, on the CPU."""
    if not distributed.active():
        return t
    row_bytes = math.prod(t.shape[1:]) * t.element_size()
    raw = t.contiguous().view(torch.uint8).reshape(t.shape[0], row_bytes)  # (a rank may have no rows)
    dev = policy.device if distributed.backend_for(policy.device) == "nccl" else torch.device("cpu")
    out = distributed.all_gather_cat(raw.to(dev)).cpu()
    return out.view(t.dtype).reshape(-1, *t.shape[1:])


def _gather_and_write(rows: TeacherRows, index: torch.Tensor, crops: ViewCrops, mine: torch.Tensor, n: int,
                      num_classes: int, fp: str, v: int, run_dir: Path, policy: DevicePolicy) -> None:
    index, mine = _gather(index, policy), _gather(mine, policy)
    boxes, flips = _gather(crops.boxes.to(torch.int32), policy), _gather(crops.flips, policy)
    values, lse = _gather(rows.values, policy), _gather(rows.lse, policy)
    classes = _gather(rows.classes, policy) if rows.classes is not None else None
    if not distributed.is_main():
        return
    full_boxes = torch.zeros(n, boxes.shape[1], dtype=torch.int32)
    full_boxes[mine] = boxes
    full_flips = torch.zeros(n, dtype=torch.bool)
    full_flips[mine] = flips
    full = TeacherRows(torch.zeros(n, values.shape[1], dtype=values.dtype),
                       None if classes is None else torch.zeros(n, classes.shape[1], dtype=classes.dtype),
                       torch.zeros(n, dtype=torch.float32))
    full.values[index], full.lse[index] = values, lse
    if classes is not None:
        full.classes[index] = classes
    view = ReplayView(ViewCrops(compact_boxes(full_boxes), full_flips), full, num_classes)
    atomic_write(view_path(run_dir, v), lambda f: torch.save(view_state(view, fp, v), f))
