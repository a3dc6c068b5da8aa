"""Crash-safe files: checkpoints (and small text files) are written to a temp file and renamed.

:func:`save_checkpoint` writes to a temp file in the destination folder, flushes and fsyncs it,
then ``os.replace``-s it over the destination, so a write killed at any point leaves the previous
file intact (at worst a stray ``.<name>.*.tmp`` file remains). :func:`load_checkpoint_file`
turns a missing or unreadable file into one :class:`~kdlab.errors.KdlabError` line.

Checkpoints written by the trainer hold only tensors, numbers, strings, lists, tuples and dicts,
so they load with ``torch.load(weights_only=True)``; every file kdlab reads is loaded that way (no
second, unsafe path). A write that fails (a full disk) is one line and leaves the earlier file.
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
from kdlab.safe_load import safe_load


def fsync_dir(folder: Path) -> None:
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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise KdlabError(f"cannot write {path} ({e.strerror or e}); check that its folder is writable") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):  # e.g. a full disk: the earlier file is untouched
            raise KdlabError(f"could not write {path} ({e.strerror or e}); any earlier {path.name} is intact: "
                             "free space (or fix the folder), then continue with --resume") from None
        raise
    fsync_dir(path.parent)
    return path


def save_checkpoint(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically (used for ``summary.json`` and ``config.yaml``)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write a file's bytes atomically."""
    return atomic_write(path, lambda f: f.write(data))


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint safely (:func:`kdlab.safe_load.safe_load`); every failure is one line."""
    return safe_load(path, map_location=map_location)


def _plain(obj: Any, depth: int = 0) -> Any:
    """Tensors, numbers, strings and containers of them; modules become state dicts, the rest is dropped."""
    if depth > 20:
        return None
    if isinstance(obj, torch.nn.Module):
        return {k: v.detach().clone() for k, v in obj.state_dict().items()}
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():  # numpy scalars
        return obj.item()
    if isinstance(obj, dict):
        out = {str(k): _plain(v, depth + 1) for k, v in obj.items()}
        return {k: v for k, v in out.items() if v is not None or obj.get(k) is None}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v, depth + 1) for v in obj)
    return None


def convert_trusted(src: str | Path, dst: str | Path | None = None) -> Path:
    """Load ``src`` with full unpickling (THE USER TRUSTS IT) and save its plain content to ``dst``.

    ``dst`` defaults to ``<src stem>.safe.pt`` beside it; the result loads with :func:`safe_load`.
    """
    src = Path(src)
    if not src.is_file():
        raise KdlabError(f"checkpoint {src} does not exist")
    dst = Path(dst) if dst else src.with_name(f"{src.stem}.safe.pt")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=False)  # explicit user trust (--trust)
    except Exception as e:
        raise KdlabError(f"could not read {src} even with full unpickling ({type(e).__name__}: {e})") from None
    save_checkpoint(_plain(obj), dst)
    return dst
