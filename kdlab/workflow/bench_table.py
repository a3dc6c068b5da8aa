"""A bench's table: finished cells grouped by (method, teacher->student, axis values), seeds aggregated.

Read from the cells' run folders only: ``config.yaml`` (method, models, dataset, ``published:``)
and ``summary.json`` (``val_top1``, ``test_top1_at_best_val``, ``test_top1_last``). Per group:

* mean and sample std (ddof=1) over seeds of the three accuracies;
* the student baseline: the group of method ``ce`` with the same dataset, student and axis values
  (or the student's only ``ce`` group when no such one exists), and ``delta`` = test top-1 at best
  val minus the baseline's (both means);
* the published number (the config's first ``published:`` entry with metric ``top1``) and
  ``gap`` = our mean test top-1 at best val minus it;
* against a named baseline method on the same pair (``--baseline kd``): the difference of mean test
  top-1 at best val with Welch's 95% t-interval over seeds (:func:`kdlab.workflow.stats.welch_interval`).

Optional cost columns (``--cost``) come from :func:`kdlab.workflow.cost.bench_columns`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdlab.workflow.bench_grid import Cell
from kdlab.workflow.stats import mean, sample_std, welch_interval

METRICS = ("val_top1", "test_top1_at_best_val", "test_top1_last")
HEADLINE = "test_top1_at_best_val"  # what delta, gap and the CI compare


@dataclass
class CellResult:
    cell: str
    method: str
    teacher: str
    student: str
    dataset: str
    setting: str
    seed: int
    values: dict[str, float | None]
    published: float | None
    published_source: str
    config_path: Path


@dataclass
class Group:
    method: str
    teacher: str
    student: str
    dataset: str
    setting: str
    cells: list[CellResult] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def pair(self) -> str:
        return f"{self.teacher}->{self.student}" if self.teacher else self.student

    def values(self, metric: str) -> list[float]:
        return [c.values[metric] for c in self.cells if c.values.get(metric) is not None]


def read_cell(run_dir: Path, cell: Cell) -> CellResult | None:
    """A finished cell's numbers, or ``None`` when it has no ``summary.json`` yet."""
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    method = cfg.get("method", {}).get("name", "?")
    teacher = (cfg.get("teacher") or {}).get("name") or ""
    if method == "ce":
        teacher = ""
    pub = next((p for p in cfg.get("published") or [] if p.get("metric", "top1") == "top1"
                and p.get("value") is not None), None)
    setting = ", ".join(f"{k}={v}" for k, v in cell.axes.items())
    return CellResult(cell=cell.name, method=method, teacher=teacher, student=cfg.get("student", {}).get("name", "?"),
                      dataset=cfg.get("data", {}).get("dataset", "?"), setting=setting, seed=cell.seed,
                      values={m: summary.get(m) for m in METRICS}, published=pub["value"] if pub else None,
                      published_source=pub.get("source", "") if pub else "", config_path=run_dir / "config.yaml")


def collect(cells: list[Cell], bench_dir: Path) -> tuple[list[CellResult], list[str]]:
    """Finished cells' results and the names of the unfinished ones."""
    done, pending = [], []
    for cell in cells:
        r = read_cell(Path(bench_dir) / cell.name, cell)
        (done.append(r) if r else pending.append(cell.name))
    return done, pending


def build_table(results: list[CellResult], baseline: str | None = None) -> list[Group]:
    """Group the cells and fill every group's ``stats`` (see the module docstring)."""
    groups: dict[tuple, Group] = {}
    for r in results:
        key = (r.method, r.teacher, r.student, r.dataset, r.setting)
        groups.setdefault(key, Group(*key)).cells.append(r)
    for g in groups.values():
        s = g.stats
        for m in METRICS:
            vals = g.values(m)
            s[m] = (mean(vals), sample_std(vals), len(vals))
        s["seeds"] = sorted(c.seed for c in g.cells)
        pubs = [c.published for c in g.cells if c.published is not None]
        s["published"] = pubs[0] if pubs else None
        s["published_source"] = next((c.published_source for c in g.cells if c.published is not None), "")
        ours = s[HEADLINE][0]
        s["gap"] = ours - s["published"] if ours is not None and s["published"] is not None else None
        ce = groups.get(("ce", "", g.student, g.dataset, g.setting))
        if ce is None:  # axes a ce run cannot take (method params): the student's only ce group, if one
            alone = [c for k, c in groups.items() if k[0] == "ce" and k[2:4] == (g.student, g.dataset)]
            ce = alone[0] if len(alone) == 1 else None
        s["student_ce"] = mean(ce.values(HEADLINE)) if ce else None
        has = ours is not None and s["student_ce"] is not None and g.method != "ce"
        s["delta"] = ours - s["student_ce"] if has else None
        s["ci"] = None
        if baseline and g.method != baseline:
            base = groups.get((baseline, "" if baseline == "ce" else g.teacher, g.student, g.dataset, g.setting))
            if base is not None:
                s["ci"] = welch_interval(g.values(HEADLINE), base.values(HEADLINE))
    return sorted(groups.values(), key=lambda g: (g.dataset, g.pair, g.setting, g.method != "ce", g.method))


def cost_columns(groups: list[Group]) -> None:
    """Fill ``stats['cost']`` from :func:`kdlab.workflow.cost.bench_columns` (one cell's config per group)."""
    from kdlab.workflow.cost import bench_columns

    for g in groups:
        g.stats["cost"] = dict(bench_columns(g.cells[0].config_path))
