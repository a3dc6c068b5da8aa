"""Where decoded image tensors are cached, and under which key.

A decoded split is saved as ``<root>/.kdlab-cache/<name>-<key>.pt`` or, when ``root`` is not
writable, ``$XDG_CACHE_HOME/kdlab`` (default ``~/.cache/kdlab``). The key is a fingerprint of the
file list: relative paths, sizes, modification times, labels and the decoded size, so any change
to the files or the request gives a new file. Writes go to a temporary file that is then renamed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from kdlab.errors import KdlabError
from kdlab.safe_load import safe_load

FORMAT_VERSION = "1"


def cache_dir(root: Path) -> Path:
    """``root/.kdlab-cache`` when it can be written, else the user cache folder."""
    local = root / ".kdlab-cache"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdlab"
    user.mkdir(parents=True, exist_ok=True)
    return user


def fingerprint(root: Path, paths: Sequence[str], targets: Tensor, size: tuple[int, int]) -> str:
    """A hex key for this list of files, their labels and the decoded size."""
    prefix = str(root) + os.sep
    h = hashlib.sha1(f"{FORMAT_VERSION}|{size}|{root.resolve()}\n".encode())
    for p, t in zip(paths, targets.tolist()):
        st = os.stat(p)
        rel = p[len(prefix):] if p.startswith(prefix) else p
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}|{t}\n".encode())
    return h.hexdigest()[:20]


def load(path: Path, n: int) -> Tensor | None:
    """The cached tensor at ``path`` if it is there and holds ``n`` images, else None."""
    if not path.is_file():
        return None
    try:
        images = safe_load(path)
    except KdlabError:  # a truncated or foreign file: decode again
        return None
    return images if isinstance(images, Tensor) and images.shape[0] == n else None


def save(path: Path, images: Tensor) -> None:
    """Write ``images`` to ``path`` atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(images, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
