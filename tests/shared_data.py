"""Locate the ../shared folder next to the repository and unpack its data archives once.

``extracted("cifar10-jpeg.tar.gz")`` returns the folder the archive unpacked to, under a cache
folder (``$KDLAB_TEST_CACHE``, default ``~/.cache/kdlab/shared``); it is unpacked the first time
only (a marker file records the archive's size and mtime) and a lock keeps concurrent test runs
from unpacking it twice. Tests call :func:`require` to skip, with a reason, when shared is absent.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"


def cache_root() -> Path:
    root = Path(os.environ.get("KDLAB_TEST_CACHE") or Path.home() / ".cache" / "kdlab" / "shared")
    root.mkdir(parents=True, exist_ok=True)
    return root


def require(name: str) -> Path:
    """Path of ``shared/data/<name>``; skips the calling test when it is absent."""
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (needs the ../shared data folder)")
    return path


def _unpack(archive: Path, dest: Path) -> None:
    if shutil.which("tar"):
        subprocess.run(["tar", "xzf", str(archive), "-C", str(dest)], check=True)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")


def extracted(name: str) -> Path:
    """The top folder of ``shared/data/<name>`` unpacked in the cache (skips when absent)."""
    archive = require(name)
    stem = name.removesuffix(".tar.gz").removesuffix(".tgz")
    target = cache_root() / stem
    st = archive.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}\n"
    marker = target / ".unpacked"
    with open(cache_root() / f".{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.is_file() and marker.read_text() == stamp):
            shutil.rmtree(target, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(dir=cache_root(), prefix=f".{stem}-"))
            try:
                _unpack(archive, tmp)
                tops = [p for p in tmp.iterdir() if p.is_dir()]
                if len(tops) != 1:
                    raise RuntimeError(f"{archive} does not unpack to one folder: {tops}")
                tops[0].rename(target)
                marker.write_text(stamp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target
