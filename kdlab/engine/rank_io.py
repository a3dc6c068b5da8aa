"""Rank-0-only file I/O of a multi-process run: claiming the run folder, reading ``last.pt``, logging.

Only rank 0 locks the run folder, applies the resume/overwrite rules, cuts the metrics log back,
writes checkpoints, logs and the summary (atomically, through
:class:`~kdlab.engine.run_folder.RunFolder`). The other ranks learn rank 0's decision (or its
one-line error) by a broadcast, read ``last.pt`` once rank 0 has put the folder back to its moment,
and log into a :class:`SilentLogger`. Single-process runs go straight to the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.engine import distributed
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.run_folder import RunFolder
from kdlab.errors import KdlabError


def claim(folder: RunFolder, resume: bool, overwrite: bool) -> bool:
    """:meth:`RunFolder.claim` on rank 0; every rank returns its decision or raises its error."""
    if not distributed.active():
        return folder.claim(resume, overwrite)
    asked = (resume, overwrite)
    if folder.claimed is not None and folder.claimed[0] == asked:
        return folder.claimed[1]
    outcome: tuple[bool, str | None] = (False, None)
    if distributed.is_main():
        try:
            outcome = (folder.claim(resume, overwrite), None)
        except KdlabError as e:
            outcome = (False, str(e))
    outcome = distributed.broadcast_object(outcome)
    if outcome[1] is not None:
        raise KdlabError(outcome[1])
    folder.claimed = (asked, outcome[0])
    return outcome[0]


def load_last(folder: RunFolder) -> dict[str, Any]:
    """``last.pt``: rank 0 reads it and restores the folder's files first, then the others read it."""
    if distributed.is_main():
        ck = folder.load_last()
        distributed.barrier()
        return ck
    distributed.barrier()
    return load_checkpoint_file(folder.last)


def save(write, *args: Any) -> None:
    """``write(*args)`` on rank 0, then a barrier: the file exists for every rank afterwards."""
    if distributed.is_main():
        write(*args)
    distributed.barrier()


class SilentLogger:
    """The logger of ranks other than 0: every call is accepted and nothing is written or shown."""

    shows_progress = False

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def make_logger(run_dir: Path, cfg: Any) -> Any:
    """The run's :class:`~kdlab.engine.logging.RunLogger` on rank 0, a :class:`SilentLogger` elsewhere."""
    from kdlab.engine.logging import RunLogger

    return RunLogger.from_config(run_dir, cfg) if distributed.is_main() else SilentLogger()
