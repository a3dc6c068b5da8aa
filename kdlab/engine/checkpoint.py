"""Crash-safe files: checkpoints (and small text files) are written to a temp file and renamed.

:func:`save_checkpoint` writes to a temp file in the destination folder, flushes and fsyncs it,
then ``os.replace``-s it over the destination, so a write killed at any point leaves the previous
file intact (at worst a stray ``.<name>.*.tmp`` file remains). :func:`load_checkpoint_file`
turns a missing or unreadable file into one :class:`~kdlab.errors.KdlabError` line.

Checkpoints written by the trainer hold only tensors, numbers, strings, lists, tuples and dicts,
so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from kdlab.errors import KdlabError


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically (used for ``summary.json`` and ``config.yaml``)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu",
                         weights_only: bool = True) -> Any:
    """Load a checkpoint; a missing or corrupt file raises a one-line :class:`KdlabError`."""
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # any failure to unpickle means an unusable file
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise KdlabError(f"checkpoint {path} is unreadable or corrupt ({reason})") from None
