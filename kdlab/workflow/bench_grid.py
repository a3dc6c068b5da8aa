"""A bench grid: YAML -> cells (configs x override axes x seeds), each cell an ordinary run.

Grid file::

    name: tiny-small                 # bench folder: <out_dir>/<name> (default out_dir: runs/bench)
    configs: [tiny-imagenet/ce/resnet8x4, my_kd.yaml]   # shipped recipe names or files (relative to the grid)
    seeds: [0, 1, 2]                 # train.seed of each cell (default [0])
    set: [schedule.epochs=5]         # overrides applied to every cell (optional)
    overrides:                       # axes, crossed with each other (optional)
      optim.lr: [0.05, 0.1]
    baseline: kd                     # default method for the CI column (optional; --baseline wins)

Every cell's config is loaded and checked (names, hyper-parameters, checkpoint paths) by
:func:`check_cells` before anything trains, so one bad cell stops the bench in a second.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.config import Config, load_config, load_yaml, resolve_config_path, resolve_shipped
from kdlab.errors import KdlabError, closest

GRID_DIR = Path(__file__).resolve().parent.parent / "grids"
GRID_KEYS = ("name", "configs", "seeds", "set", "overrides", "baseline", "out_dir")


@dataclass
class Cell:
    """One run of the grid: a config, its overrides (axes, then ``train.seed``) and a run name."""

    name: str
    config: str
    overrides: list[str]
    seed: int
    axes: dict[str, Any] = field(default_factory=dict)

    def train_overrides(self, bench_dir: Path) -> list[str]:
        """Everything ``kdlab train`` needs after the config: overrides, then ``out_dir`` and ``name``."""
        return [*self.overrides, f"out_dir={bench_dir}", f"name={self.name}"]


@dataclass
class Grid:
    name: str
    path: Path
    configs: list[str]
    seeds: list[int]
    common: list[str]
    axes: dict[str, list[Any]]
    baseline: str | None
    out_dir: str

    @property
    def bench_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def resolve_grid_path(spec: str | Path) -> Path:
    """A grid file, or the name of a shipped grid (``kdlab/grids/<name>.yaml``)."""
    return resolve_shipped(spec, GRID_DIR, "grid", "grid")


def _list_of(raw: dict, key: str, path: Path, kind: type | tuple = object) -> list:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        what = {int: "integers", str: "strings"}.get(kind, "values") if isinstance(kind, type) else "values"
        raise KdlabError(f"grid {path}: {key!r} must be a list of {what}, got {value!r}")
    return value


def load_grid(spec: str | Path, extra: list[str] | None = None, out_dir: str | None = None) -> Grid:
    """Read a grid file; ``extra`` overrides go to every cell after the grid's own ``set:``."""
    path = resolve_grid_path(spec)
    raw = load_yaml(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise KdlabError(f"grid {path} must be a mapping with 'configs:' and 'seeds:', got {type(raw).__name__}")
    for key in raw:
        if key not in GRID_KEYS:
            near = closest(str(key), GRID_KEYS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(GRID_KEYS)}"
            raise KdlabError(f"grid {path}: unknown key {key!r}; {hint}")
    configs = _list_of(raw, "configs", path, str)
    if not configs:
        raise KdlabError(f"grid {path} has no cells: list at least one config under 'configs:'")
    seeds = _list_of(raw, "seeds", path, int) if "seeds" in raw else [0]
    if not seeds:
        raise KdlabError(f"grid {path} has no cells: 'seeds:' is empty; list at least one seed")
    axes = raw.get("overrides") or {}
    if not isinstance(axes, dict):
        raise KdlabError(f"grid {path}: 'overrides' must map config keys to lists of values, got {axes!r}")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise KdlabError(f"grid {path}: override axis {key!r} must be a non-empty list of values, got {values!r}")
    resolved = [_resolve_config(c, path) for c in configs]
    name = str(raw.get("name") or path.stem)
    return Grid(name=name, path=path, configs=resolved, seeds=seeds,
                common=[*(str(s) for s in _list_of(raw, "set", path, str)), *(extra or [])],
                axes={str(k): v for k, v in axes.items()}, baseline=raw.get("baseline"),
                out_dir=out_dir or str(raw.get("out_dir") or "runs/bench"))


def _resolve_config(spec: str, grid_path: Path) -> str:
    local = grid_path.parent / spec
    if local.is_file() and grid_path.parent != GRID_DIR:
        return str(local)
    try:
        return str(resolve_config_path(spec))
    except KdlabError as e:
        raise KdlabError(f"grid {grid_path}: {e}") from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def _config_label(config: str) -> str:
    from kdlab.config import CONFIG_DIR

    p = Path(config).resolve()
    try:
        return _slug(str(p.relative_to(CONFIG_DIR).with_suffix("")))
    except ValueError:
        return _slug(p.stem)


def expand(grid: Grid) -> list[Cell]:
    """Every cell: configs x axis values (in the file's order) x seeds; names are unique run folders."""
    cells: list[Cell] = []
    keys = list(grid.axes)
    for config in grid.configs:
        for combo in itertools.product(*(grid.axes[k] for k in keys)) if keys else [()]:
            axes = dict(zip(keys, combo))
            axis_part = "".join(f"-{_slug(k.split('.')[-1])}={_slug(str(v))}" for k, v in axes.items())
            for seed in grid.seeds:
                name = f"{_config_label(config)}{axis_part}-s{seed}"
                over = [*grid.common, *(f"{k}={v}" for k, v in axes.items()), f"train.seed={seed}"]
                cells.append(Cell(name=name, config=config, overrides=over, seed=seed, axes=axes))
    seen: set[str] = set()
    for c in cells:
        if c.name in seen:
            raise KdlabError(f"grid {grid.path}: two cells would share the run folder {c.name!r}; "
                             "list each config once")
        seen.add(c.name)
    return cells


def cell_config(cell: Cell, bench_dir: Path) -> Config:
    """The cell's config as ``kdlab train`` will load it."""
    return load_config(cell.config, cell.train_overrides(bench_dir))


def check_cells(cells: list[Cell], bench_dir: Path) -> list[Config]:
    """Load and check every cell's config before anything trains; the first bad one raises, naming the cell."""
    from kdlab.experiment import check_config

    out = []
    for cell in cells:
        try:
            cfg = cell_config(cell, bench_dir)
            check_config(cfg)
        except KdlabError as e:
            raise KdlabError(f"grid cell {cell.name} ({cell.config}): {e}") from None
        out.append(cfg)
    return out
