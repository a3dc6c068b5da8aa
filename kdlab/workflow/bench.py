"""``kdlab bench``: check every cell, run the unfinished ones, then write and print the table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.workflow.bench_grid import check_cells, expand, load_grid
from kdlab.workflow.bench_render import print_rich, write_all
from kdlab.workflow.bench_run import check_outcome, run_cells
from kdlab.workflow.bench_table import build_table, collect, cost_columns


def run_bench(grid_spec: str, overrides: Sequence[str] = (), *, jobs: int = 1, devices: Sequence[str] | None = None,
              table_only: bool = False, baseline: str | None = None, out_dir: str | None = None,
              cost: bool = False, echo=print) -> dict[str, Path]:
    """Run (or with ``table_only`` only tabulate) a grid; returns the written table files."""
    grid = load_grid(grid_spec, list(overrides), out_dir=out_dir)
    cells = expand(grid)
    bench_dir = grid.bench_dir
    outcome: dict[str, str] = {}
    if not table_only:
        check_cells(cells, bench_dir)  # every cell's config, before anything trains
        bench_dir.mkdir(parents=True, exist_ok=True)
        outcome = run_cells(cells, bench_dir, jobs=jobs, devices=devices, echo=echo)
    results, pending = collect(cells, bench_dir)
    if not results:
        raise KdlabError(f"no finished cells under {bench_dir}: run `kdlab bench {grid_spec}` without --table first")
    base = baseline or grid.baseline
    groups = build_table(results, base)
    notes = [f"{len(pending)} of {len(cells)} cells not finished: {', '.join(pending[:5])}"] if pending else []
    if cost:
        cost_columns(groups)
    paths = write_all(groups, bench_dir, base, notes)
    print_rich(groups, base, title=f"bench {grid.name}: {len(results)} finished cells")
    for n in notes:
        echo(n)
    echo("wrote " + ", ".join(str(p) for p in paths.values()))
    check_outcome(outcome, bench_dir)
    return paths
