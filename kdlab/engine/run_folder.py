"""A run's folder: its name, its lock, and what a fresh start or a resume may do to the files in it.

Rules (the README's promise that no run is lost):

* a run name is one folder name: letters, digits and ``._-+=``, at most 128 characters, not
  ``.``/``..``, so ``out_dir/name`` never leaves ``out_dir``;
* one process at a time: ``.lock`` holds the owner's pid and start time; a second run on the same
  folder is refused, a lock whose owner is gone is stale and taken over;
* ``--resume`` needs ``checkpoints/last.pt``; without it nothing is touched and the command stops
  (except after a finished init phase: ``init.pt`` alone restarts the main phase from it);
* a fresh start in a folder that holds any run file (``last.pt``, ``best.pt``, ``metrics.jsonl``,
  ``summary.json``) is refused unless ``--overwrite``, which deletes them first;
* on resume, temp files of dead writers are removed and ``metrics.jsonl`` is cut back (atomically) to
  its length when ``last.pt`` was written, so the log holds no records of the lost steps;
* ``best.pt`` is never ahead of ``last.pt``: a new best goes to ``best.next.pt``; ``last.pt``, written
  next, records its step; only then is it renamed to ``best.pt``. A resume promotes a
  ``best.next.pt`` that ``last.pt`` names and deletes one it does not.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from kdlab.engine.checkpoint import fsync_dir, load_checkpoint_file, save_checkpoint, write_bytes_atomic
from kdlab.errors import KdlabError

NAME_RE = re.compile(r"[A-Za-z0-9._+=-]{1,128}")
RUN_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "summary.json")


def check_run_name(name: str) -> None:
    """Refuse a run name that is not one safe folder name (one line)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or set(name) == {"."}:
        shown = name if len(str(name)) <= 60 else f"{str(name)[:57]}... ({len(name)} characters)"
        raise KdlabError(f"run name {shown!r} is not allowed: a name is one folder name of letters, digits and "
                         "._-+= (at most 128 characters, not . or ..); e.g. name=kd-resnet8x4-seed0")


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' where unknown: tells pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(owner: str) -> bool:
    parts = owner.split()
    if not parts or not parts[0].isdigit():
        return False
    pid = int(parts[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = parts[1] if len(parts) > 1 else ""
    return not started or not _start_time(pid) or _start_time(pid) == started


class RunFolder:
    """The files of one run under ``run_dir`` (see the module docstring for the rules)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.ckpt_dir = self.dir / "checkpoints"
        self.last = self.ckpt_dir / "last.pt"
        self.best = self.ckpt_dir / "best.pt"
        self.best_next = self.ckpt_dir / "best.next.pt"
        self.init = self.ckpt_dir / "init.pt"
        self.metrics = self.dir / "metrics.jsonl"
        self.lock_path = self.dir / ".lock"
        self._me = f"{os.getpid()} {_start_time(os.getpid())}"
        self.claimed: tuple[tuple[bool, bool], bool] | None = None  # (resume, overwrite) asked -> decision
        self._pending: int | None = None  # step of the best.next.pt this process wrote

    # ---- lock ---------------------------------------------------------------------------
    def make(self) -> None:
        """Create the folder; an unusable ``out_dir`` (a file on the way, no permission) is one line."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KdlabError(f"cannot create the run folder {self.dir} ({e.strerror or e}); set out_dir to a "
                             "writable folder") from None

    def lock(self) -> None:
        """Take ``.lock`` (re-entrant in this process); refuse when another live process holds it."""
        self.make()
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = self.lock_path.read_text().strip()
                except OSError:
                    owner = ""
                if owner == self._me:
                    return
                if _alive(owner):
                    raise KdlabError(f"run {self.dir} is in use by process {owner.split()[0]} (lock file "
                                     f"{self.lock_path}); wait for it to finish or choose another name") from None
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()  # stale: its owner is gone
                continue
            except OSError as e:
                raise KdlabError(f"cannot write in the run folder {self.dir} ({e.strerror or e}); set out_dir to "
                                 "a writable folder") from None
            with os.fdopen(fd, "w") as f:
                f.write(self._me + "\n")
            atexit.register(self.unlock)
            return
        raise KdlabError(f"could not take the lock {self.lock_path}; remove it if no run uses this folder")

    def unlock(self) -> None:
        """Remove ``.lock`` if this process holds it."""
        with contextlib.suppress(OSError):
            if self.lock_path.read_text().strip() == self._me:
                self.lock_path.unlink()

    # ---- fresh start or resume ----------------------------------------------------------
    def present(self) -> list[str]:
        return [f for f in RUN_FILES if (self.dir / f).exists()]

    def claim(self, resume: bool, overwrite: bool) -> bool:
        """Lock the folder and apply the start rules; return True when ``last.pt`` is to be resumed.

        Called by the experiment before anything is written (teacher caches) and again by the
        trainer; the second call with the same arguments does nothing.
        """
        asked = (resume, overwrite)
        if self.claimed is not None and self.claimed[0] == asked:
            return self.claimed[1]
        self.lock()
        try:
            if resume and not self.last.is_file() and self.init.is_file():
                # killed after a finished init phase (AB/FT/FSP), before the first last.pt: the main
                # phase starts again from init.pt; its partial log and files are dropped
                self._clear(keep_init=True)
                resume = False
            elif resume:
                if not self.last.is_file():
                    have = self.present()
                    what = f"it holds {', '.join(have)}" if have else "it holds no run files"
                    raise KdlabError(f"--resume: no checkpoint {self.last} to continue from ({what}); nothing was "
                                     "changed. Start the run again with --overwrite, or choose another name")
                self.remove_dead_temp_files()
            else:
                have = self.present()
                if have and not overwrite:
                    raise KdlabError(f"run folder {self.dir} already holds a run ({', '.join(have)}); continue it "
                                     "with --resume, replace it with --overwrite, or choose another name")
                self._clear(keep_init=False)
        except BaseException:
            self.unlock()
            raise
        self.claimed = (asked, resume)
        return resume

    def _clear(self, keep_init: bool) -> None:
        self.remove_dead_temp_files()
        for f in (*RUN_FILES, "checkpoints/best.next.pt", *(() if keep_init else ("checkpoints/init.pt",))):
            (self.dir / f).unlink(missing_ok=True)
        shutil.rmtree(self.dir / "tb", ignore_errors=True)

    def remove_dead_temp_files(self) -> list[Path]:
        """Delete ``.<name>.*.tmp`` files of writers killed mid-write (we hold the lock: none is alive)."""
        gone = []
        for folder in (self.dir, self.ckpt_dir):
            for p in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    p.unlink()
                    gone.append(p)
        return gone

    # ---- checkpoints ----------------------------------------------------------------------
    def save_last(self, state: dict[str, Any]) -> None:
        """Write ``last.pt`` (recording the metrics log's length), then promote a pending best."""
        state = dict(state, metrics_bytes=self.metrics.stat().st_size if self.metrics.exists() else 0,
                     best_file_step=self._pending_step())
        save_checkpoint(state, self.last)
        if self.best_next.exists():
            os.replace(self.best_next, self.best)
            fsync_dir(self.ckpt_dir)
        self._pending = None

    def save_best(self, state: dict[str, Any]) -> None:
        """Write a new best; it becomes ``best.pt`` when the next ``last.pt`` is written."""
        save_checkpoint(state, self.best_next)
        self._pending = state.get("step")

    def best_file(self) -> Path:
        """The newest best checkpoint on disk (pending or promoted)."""
        return self.best_next if self.best_next.exists() else self.best

    def _pending_step(self) -> int | None:
        if not self.best_next.exists():
            return None
        return self._pending if self._pending is not None else load_checkpoint_file(self.best_next).get("step")

    def load_last(self) -> dict[str, Any]:
        """Read ``last.pt`` and put the folder back to its moment: pending best, metrics log."""
        try:
            ck = load_checkpoint_file(self.last)
        except KdlabError as e:
            raise KdlabError(f"{e}; start the run again with --overwrite") from None
        if self.best_next.exists():
            pending = load_checkpoint_file(self.best_next).get("step")
            if ck.get("best_file_step") is not None and pending == ck["best_file_step"]:
                os.replace(self.best_next, self.best)  # killed between last.pt and the rename
            else:
                self.best_next.unlink()  # written after last.pt: its steps are lost and will be redone
            fsync_dir(self.ckpt_dir)
        self.cut_metrics(ck.get("metrics_bytes"))
        return ck

    def cut_metrics(self, length: int | None) -> None:
        """Cut ``metrics.jsonl`` back to ``length`` bytes (atomically); records after it are dropped."""
        if length is None or not self.metrics.exists() or self.metrics.stat().st_size <= length:
            return
        with self.metrics.open("rb") as f:
            head = f.read(length)
        write_bytes_atomic(self.metrics, head)
