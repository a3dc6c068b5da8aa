"""``kdlab sweep``: check the config and space, hold the sweep folder, run the trials, write the report.

Sweep folder (default ``runs/sweep/<config name>``): ``sweep.json`` (what is swept, so a resume
with different inputs is refused), ``study.db`` (Optuna, SQLite), ``trials/trial-NNN`` (runs),
then ``best.yaml``, ``trials.md``, ``trials.csv`` and ``importance.png``. With ``--jobs N`` the
trials run in N worker processes sharing the study, the CPU cores split between them
(``OMP_NUM_THREADS``); the total can overshoot ``--trials`` by at most N-1.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.workflow.sweep_space import Space, as_overrides, load_space, probe_values


def check_inputs(config: str, overrides: list[str], space: Space):
    """The base config and one pick of every parameter load and pass the config checks (one line each)."""
    from kdlab.config import load_config
    from kdlab.experiment import check_config

    base = load_config(config, overrides)
    check_config(base)
    if not base.data.val_fraction or base.data.val_fraction <= 0:
        raise KdlabError("a sweep optimises validation top-1 only: set data.val_fraction > 0 (e.g. 0.1)")
    for key, value in probe_values(space):
        try:
            check_config(load_config(config, [*overrides, *as_overrides({key: value})]))
        except KdlabError as e:
            raise KdlabError(f"search space {space.path}: {key}={value!r} gives a bad config: {e}") from None
    return base


def _claim(sweep_dir: Path, spec: dict):
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = open(sweep_dir / ".sweep.lock", "w")  # noqa: SIM115 - held for the sweep's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise KdlabError(f"another sweep is running in {sweep_dir}; wait for it or choose another --out") from None
    path = sweep_dir / "sweep.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in ("config", "overrides", "space")} != {k: spec[k] for k in
                                                                          ("config", "overrides", "space")}:
            lock.close()
            raise KdlabError(f"{sweep_dir} holds a sweep of other inputs (see its sweep.json); choose another --out")
    path.write_text(json.dumps(spec, indent=2))
    return lock


def _run_workers(sweep_dir: Path, jobs: int, total: int) -> None:
    share = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share}
    procs = []
    for i in range(jobs):
        log = open(sweep_dir / f"worker-{i}.log", "a")  # noqa: SIM115 - the child owns it
        procs.append(subprocess.Popen([sys.executable, "-m", "kdlab.workflow.sweep_worker", str(sweep_dir), str(i),
                                       str(total)], stdout=log, stderr=subprocess.STDOUT, env=env))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    if any(codes):
        raise KdlabError(f"sweep worker(s) exited with {codes}; see {sweep_dir}/worker-*.log")


def run_sweep(config: str, space_spec: str, overrides: Sequence[str] = (), *, trials: int = 20, jobs: int = 1,
              out: str | None = None, echo=print) -> dict:
    """Run the sweep to ``trials`` complete-or-pruned trials; returns the report's summary."""
    from kdlab.workflow.sweep_report import write_report
    from kdlab.workflow.sweep_study import count_done, make_objective, open_study, optimize, recover_killed

    space = load_space(space_spec)
    overrides = list(overrides)
    base = check_inputs(config, overrides, space)
    sweep_dir = Path(out or Path("runs") / "sweep" / base.name)
    spec = {"config": str(config), "overrides": overrides, "space": space.path.read_text(),
            "space_path": str(space.path.resolve())}
    lock = _claim(sweep_dir, spec)
    try:
        study = open_study(sweep_dir, space)
        retried = recover_killed(study)
        if retried:
            echo(f"sweep {sweep_dir}: trial(s) {retried} were killed mid-run; their parameters are queued again")
        done = count_done(study)
        echo(f"sweep {sweep_dir}: {done} of {trials} trials finished; running {max(0, trials - done)} more")
        if done < trials:
            if jobs == 1:
                optimize(study, make_objective(config, overrides, space, sweep_dir), trials - done, trials)
            else:
                _run_workers(sweep_dir, jobs, trials)
        return write_report(study, sweep_dir, config, overrides, echo=echo)
    finally:
        lock.close()
