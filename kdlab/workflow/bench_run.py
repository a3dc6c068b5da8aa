"""Running a bench's cells: each cell is ``kdlab train`` in its own process, under the bench folder.

Per cell, from what its run folder holds: ``summary.json`` -> finished, skipped; ``checkpoints/last.pt``
-> killed mid-run, continued with ``--resume``; otherwise started with ``--overwrite`` (a partial run
with no checkpoint has nothing worth keeping). ``jobs`` cells run at once: with ``devices`` each
cell gets one device through ``CUDA_VISIBLE_DEVICES``; on CPU the cores are split between the
processes (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, which torch reads at start-up). Every start,
skip and exit is appended to ``<bench>/bench.jsonl`` and each cell's output goes to
``<bench>/logs/<cell>.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.workflow.bench_grid import Cell

EVENTS_FILE = "bench.jsonl"


def cell_state(run_dir: Path) -> str:
    """``finished`` (summary.json), ``killed`` (checkpoints/last.pt, no summary) or ``new``."""
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "killed"
    return "new"


def train_command(cell: Cell, bench_dir: Path, state: str) -> list[str]:
    """The ``python -m kdlab train`` command line of a cell in ``state`` (``killed`` resumes)."""
    flag = "--resume" if state == "killed" else "--overwrite"
    return [sys.executable, "-m", "kdlab", "train", cell.config, *cell.train_overrides(bench_dir), flag]


def thread_env(jobs: int, device: str | None, cpus: int | None = None) -> dict[str, str]:
    """Environment additions of one cell process: its GPU, or its share of the CPU cores."""
    env: dict[str, str] = {}
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    if jobs > 1:
        share = str(max(1, (cpus or os.cpu_count() or 1) // jobs))
        env.update(OMP_NUM_THREADS=share, MKL_NUM_THREADS=share)
    return env


def _log(bench_dir: Path, **event) -> None:
    with open(bench_dir / EVENTS_FILE, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")


def read_events(bench_dir: Path) -> list[dict]:
    """The bench's event log (``start``/``skip``/``end`` records), oldest first."""
    path = Path(bench_dir) / EVENTS_FILE
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def run_cells(cells: Sequence[Cell], bench_dir: Path, *, jobs: int = 1, devices: Sequence[str] | None = None,
              echo=print) -> dict[str, str]:
    """Run every unfinished cell, ``jobs`` at a time; returns ``{cell: skipped|done|failed}``."""
    bench_dir = Path(bench_dir)
    (bench_dir / "logs").mkdir(parents=True, exist_ok=True)
    if devices:
        jobs = min(jobs, len(devices)) if jobs > 1 else len(devices)
    jobs = max(1, jobs)
    outcome: dict[str, str] = {}
    todo: list[tuple[Cell, str]] = []
    for cell in cells:
        state = cell_state(bench_dir / cell.name)
        if state == "finished":
            outcome[cell.name] = "skipped"
            _log(bench_dir, event="skip", cell=cell.name)
        else:
            todo.append((cell, state))
    echo(f"bench {bench_dir}: {len(cells)} cells, {len(outcome)} finished, {len(todo)} to run, {jobs} at a time")
    free = list(devices) if devices else [None] * jobs
    running: dict[subprocess.Popen, tuple[Cell, str | None, object]] = {}
    try:
        while todo or running:
            while todo and free:
                cell, state = todo.pop(0)
                device = free.pop(0)
                env = {**os.environ, **thread_env(jobs, device)}
                log = open(bench_dir / "logs" / f"{cell.name}.log", "a")  # noqa: SIM115 - closed on exit
                action = "resume" if state == "killed" else "fresh"
                _log(bench_dir, event="start", cell=cell.name, action=action, device=device)
                echo(f"  start {cell.name} ({action}{', device ' + device if device else ''})")
                proc = subprocess.Popen(train_command(cell, bench_dir, state), stdout=log, stderr=subprocess.STDOUT,
                                        env=env)
                running[proc] = (cell, device, log)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                cell, device, log = running.pop(proc)
                log.close()
                free.append(device)
                ok = proc.returncode == 0 and cell_state(bench_dir / cell.name) == "finished"
                outcome[cell.name] = "done" if ok else "failed"
                _log(bench_dir, event="end", cell=cell.name, rc=proc.returncode)
                echo(f"  {'done' if ok else 'FAILED'} {cell.name} (exit {proc.returncode})")
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
        raise
    return outcome


def check_outcome(outcome: dict[str, str], bench_dir: Path) -> None:
    """Raise one line naming the failed cells and where their logs are."""
    failed = [c for c, o in outcome.items() if o == "failed"]
    if failed:
        more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
        raise KdlabError(f"{len(failed)} bench cell(s) failed: {', '.join(failed[:3])}{more}; see "
                         f"{Path(bench_dir) / 'logs'}/<cell>.log, fix, and run the same command again")
