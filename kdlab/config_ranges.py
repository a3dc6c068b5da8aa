"""Value checks of a typed :class:`~kdlab.config.Config`: each out-of-range number is one error line.

Types are checked while the config is built (:func:`kdlab.config.from_dict`); this module checks
what the types cannot say (a positive batch size, sorted milestones, a minimum LR below the LR),
so that a bad value fails at load time with the key's name instead of deep inside torch.

Every integer of the config (``method.params`` and model ``kwargs`` included) must also fit a
signed 64-bit integer (what torch and numpy take; ``train.seed=1e30`` used to end in ``Overflow
when unpacking long long``), every float must be finite, and the two seeds must lie in
[0, 2^32): numpy refuses negative seeds, and the data loaders fold seeds to 32 bits, so seeds
2^32 apart would otherwise share their data order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

from kdlab.data.teacher_cache import CACHE_VIEWS
from kdlab.errors import KdlabError


def _rule(cfg: Any, key: str, ok: Callable[[Any], bool], need: str, *, optional: bool = False) -> None:
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    if optional and value is None:
        return
    if not ok(value):
        raise KdlabError(f"{key}={value!r} is out of range: it must be {need}")


INT64 = 2**63
SEED_LIMIT = 2**32
SEED_KEYS = ("train.seed", "data.split_seed")


def _numbers(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """``(key, number)`` for every int/float in ``value``: dataclass fields, lists and free mappings
    (``method.params``, ``student.kwargs``) included."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            yield from _numbers(getattr(value, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{key}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{key}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield key, value


def check_machine_numbers(cfg: Any) -> None:
    """Seeds in [0, 2^32), every other integer within int64, every float finite (one line each)."""
    for key, v in _numbers(cfg, ""):
        if key in SEED_KEYS:
            if not 0 <= v < SEED_LIMIT:
                raise KdlabError(f"{key}={v!r} is out of range: a seed must be an integer in [0, 2**32), "
                                 f"e.g. {key}=0")
        elif isinstance(v, int) and not -INT64 <= v < INT64:
            raise KdlabError(f"{key}={v!r} is out of range: it must fit a 64-bit integer (|value| < 2**63)")
        elif isinstance(v, float) and not math.isfinite(v):
            raise KdlabError(f"{key}={v!r} is out of range: it must be a finite number")


def check_ranges(cfg: Any) -> None:
    """Raise a one-line :class:`KdlabError` for the first value out of its range."""
    check_machine_numbers(cfg)
    pos, nonneg = (lambda v: v >= 1), (lambda v: v >= 0)
    for key in ("data.batch_size", "data.eval_batch_size", "schedule.epochs", "train.eval_every",
                "train.accumulate"):
        _rule(cfg, key, pos, ">= 1")
    for key in ("data.subset_size", "data.limit_per_class", "data.image_size", "train.max_steps",
                "train.early_stop_patience"):
        _rule(cfg, key, pos, ">= 1 (or null)", optional=True)
    _rule(cfg, "data.cache_views", pos, ">= 1")
    for key in ("data.crop_padding", "data.num_workers", "data.per_class", "optim.weight_decay",
                "schedule.warmup_epochs", "schedule.min_lr", "train.checkpoint_every_steps", "train.plateau_lr_drops",
                "data.prefetch", "data.cache_topk"):
        _rule(cfg, key, nonneg, ">= 0")
    _rule(cfg, "data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1)")
    _rule(cfg, "data.cache_view", lambda v: v in CACHE_VIEWS, f"one of {', '.join(CACHE_VIEWS)}")
    _rule(cfg, "data.cache_dtype", lambda v: v in ("float16", "float32"), "one of float16, float32")
    _rule(cfg, "data.on_bad_file", lambda v: v in ("error", "skip"), "one of error, skip")
    _rule(cfg, "data.decode", lambda v: v in ("cpu", "gpu"), "one of cpu, gpu")
    _rule(cfg, "train.teacher_mode", lambda v: v in ("auto", "eval", "train"), "one of auto, eval, train")
    _rule(cfg, "optim.lr", lambda v: v > 0, "> 0")
    _rule(cfg, "optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    _rule(cfg, "optim.grad_clip", lambda v: v > 0, "> 0 (or null for no clipping)", optional=True)
    _rule(cfg, "schedule.gamma", lambda v: v > 0, "> 0")
    _rule(cfg, "train.plateau_gamma", lambda v: 0 < v <= 1, "in (0, 1]")
    _rule(cfg, "schedule.warmup_epochs", lambda v: v <= cfg.schedule.epochs,
          f"<= schedule.epochs ({cfg.schedule.epochs})")
    _rule(cfg, "schedule.min_lr", lambda v: v <= cfg.optim.lr, f"<= optim.lr ({cfg.optim.lr})")
    _rule(cfg, "schedule.milestones", lambda v: all(m >= 1 for m in v) and list(v) == sorted(set(v)),
          "positive epochs in increasing order")
    for i, pub in enumerate(cfg.published):
        if pub.value is None or not pub.source.strip() or not pub.metric.strip():
            raise KdlabError(f"published[{i}] needs metric, value and source (e.g. metric: top1, value: 76.32, "
                             f"source: 'DKD paper, Table 1'); got {pub}")
