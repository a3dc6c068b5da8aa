"""Load weights from a checkpoint file into a model, with one-line errors when they do not fit.

Accepted layouts: a raw state dict, or a dict holding it under ``student`` (kdlab's own
checkpoints), ``model`` (RepDistiller, mdistiller, CKD-SW, SimKD), ``state_dict``
(akamaster/pytorch_resnet_cifar10, the OFD and ReviewKD ImageNet scripts and many others) or
``net`` (kuangliu/pytorch-cifar). Files load with ``weights_only=True`` (:mod:`kdlab.safe_load`):
a pickled ``nn.Module`` or other classes are refused with the ``kdlab convert-checkpoint FILE
--trust`` hint.
A leading ``module.`` (DataParallel / DDP) and ``_orig_mod.`` (``torch.compile``) shared by all
keys is stripped. A whole distiller's state (mdistiller's and CKD-SW's ``best``/``latest`` files:
``module.student.*`` next to ``module.teacher.*``; ReviewKD's files: ``student.*`` next to
``abfs.*``) gives its ``student.*`` part. Everything else in the file (e.g. ``best_prec1``,
``epoch``) is returned.

Key names are never renamed: the zoo uses the references' module names instead (e.g. the option-A
CIFAR ResNets name their classifier ``linear`` like akamaster's models).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.safe_load import safe_load

STATE_KEYS = ("student", "model", "state_dict", "net")
STUDENT_PREFIX = "student."  # a distiller's state: the student's part of it
DISTILLER_MARKS = ("teacher.", "abfs.")  # keys that only a distiller's state has (mdistiller/CKD-SW, ReviewKD)
STRIP_PREFIXES = ("module.", "_orig_mod.")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``), each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def split_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Return ``(state_dict, metadata)`` from a loaded checkpoint object (see module docstring)."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict()), {}
    if _is_state_dict(obj):
        return dict(obj), {}
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            if key in obj:
                inner = obj[key]
                if isinstance(inner, nn.Module):
                    inner = inner.state_dict()
                if _is_state_dict(inner):
                    return dict(inner), {k: v for k, v in obj.items() if k != key}
    if isinstance(obj, Mapping):
        found = f"a dict with keys {sorted(map(str, obj))[:10]}"
    else:
        found = type(obj).__name__
    raise KdlabError(
        f"{source} holds no state dict (looked for a raw one or under {list(STATE_KEYS)}); found {found}"
    )


def strip_prefixes(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a ``module.`` / ``_orig_mod.`` prefix (repeatedly) when every key carries it, and keep
    only the ``student.`` part (prefix dropped) of a whole distiller's state.

    A distiller's state is recognised by a ``student.`` part next to a ``teacher.`` part
    (mdistiller, CKD-SW) or ReviewKD's ``abfs.``; other wrappers (e.g. a SimKD inference model:
    ``student.`` + ``projector.`` + ``classifier.``) are left alone and fail the key check.
    """
    changed = True
    while changed and state:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
        if any(k.startswith(STUDENT_PREFIX) for k in state) and any(k.startswith(DISTILLER_MARKS) for k in state):
            state = {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
            changed = True
    return state


def _listing(label: str, items: list[str], limit: int = 5) -> str:
    if not items:
        return f"no {label.split(' (')[0]}"
    shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
    return f"{len(items)} {label} ({shown})"


def _mismatch_report(model: nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel / DDP / ``torch.compile`` wrappers (they share weights)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` and return the file's other entries.

    With ``strict=True`` (default) any missing, unexpected or wrongly shaped key raises a
    :class:`KdlabError` that lists them (up to 5 of each) on one line. With ``strict=False`` the
    keys that fit are loaded, the rest are skipped with a warning carrying the same listing.
    """
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"checkpoint file not found: {path}")
    obj = safe_load(path)  # weights_only: a file can never run code
    state, meta = split_checkpoint(obj, f"checkpoint {path}")
    state = strip_prefixes(state)

    target = _unwrap(model)
    # checkpoints written before PyTorch 0.4.1 lack BN ``num_batches_tracked``: keep the model's counters
    own = target.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing, unexpected, shapes = _mismatch_report(target, state)
    if missing or unexpected or shapes:
        report = "; ".join([
            _listing("missing keys", missing),
            _listing("unexpected keys", unexpected),
            _listing("shape mismatches (checkpoint vs model)", shapes),
        ])
        what = f"checkpoint {path} does not fit {type(target).__name__}: {report}"
        if strict:
            raise KdlabError(what + "; is it for another architecture or number of classes?")
        warnings.warn(what + "; loaded the matching keys only", stacklevel=2)
        bad = set(unexpected) | {s.split(":", 1)[0] for s in shapes}
        state = {k: v for k, v in state.items() if k not in bad}
    target.load_state_dict(state, strict=strict)
    return meta
