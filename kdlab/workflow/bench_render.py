"""Render a bench table: Markdown, CSV (raw numbers), a PNG bar chart and a rich table on the console.

Cells read ``mean ± std`` with the sample std (ddof=1) over the ``n`` seeds shown; ``delta`` is
against the same student trained with ``ce``; ``gap`` against the published number; the CI column is
Welch's 95% t-interval of the difference to the baseline method on the same pair.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from kdlab.workflow.bench_table import HEADLINE, METRICS, Group

FILES = {"md": "table.md", "csv": "table.csv", "png": "table.png"}
LABELS = {"val_top1": "val (best)", "test_top1_at_best_val": "test @best val", "test_top1_last": "test (last)"}


def _pm(m: float | None, s: float | None) -> str:
    if m is None:
        return "-"
    return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f}"


def _num(v: float | None, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")


def headers(baseline: str | None, groups: list[Group]) -> list[str]:
    cost = sorted({k for g in groups for k in g.stats.get("cost", {})})
    return ["method", "pair", "setting", "n", *(LABELS[m] for m in METRICS), "student ce", "delta",
            "published", "gap", f"vs {baseline} [95% CI]" if baseline else "vs baseline [95% CI]", *cost]


def text_rows(groups: list[Group]) -> list[list[str]]:
    rows = []
    cost = sorted({k for g in groups for k in g.stats.get("cost", {})})
    for g in groups:
        s = g.stats
        ci = s.get("ci")
        ci_text = f"{ci[0]:+.2f} [{ci[1]:+.2f}, {ci[2]:+.2f}]" if ci else "-"
        rows.append([g.method, g.pair, g.setting or "-", str(len(g.cells)),
                     *(_pm(s[m][0], s[m][1]) for m in METRICS), _num(s["student_ce"]), _num(s["delta"], True),
                     _num(s["published"]), _num(s["gap"], True), ci_text,
                     *(str(s.get("cost", {}).get(k, "-")) for k in cost)])
    return rows


def markdown(groups: list[Group], baseline: str | None, notes: list[str] = ()) -> str:
    head = headers(baseline, groups)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in text_rows(groups)]
    lines += ["", "Top-1 (%), mean ± sample std (ddof=1) over the n seeds. delta: test @best val minus the same "
              "student trained with ce; gap: test @best val minus the published number; last column: difference of "
              "test @best val to the baseline method on the same pair, with Welch's 95% t-interval over seeds.",
              *notes]
    return "\n".join(lines) + "\n"


def csv_text(groups: list[Group], baseline: str | None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["method", "teacher", "student", "dataset", "setting", "n", "seeds"]
    for m in METRICS:
        cols += [f"{m}_mean", f"{m}_std"]
    cols += ["student_ce", "delta", "published", "published_source", "gap", "baseline", "ci_diff", "ci_low",
             "ci_high"]
    w.writerow(cols)
    for g in groups:
        s = g.stats
        row = [g.method, g.teacher, g.student, g.dataset, g.setting, len(g.cells), " ".join(map(str, s["seeds"]))]
        for m in METRICS:
            row += [s[m][0], s[m][1]]
        ci = s.get("ci") or (None, None, None)
        row += [s["student_ce"], s["delta"], s["published"], s["published_source"], s["gap"], baseline or "", *ci]
        w.writerow(["" if v is None else (f"{v:.4f}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def chart(groups: list[Group], path: Path) -> Path:
    """Bars of mean test top-1 @best val (sample-std error bars), published numbers as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{g.method}\n{g.pair}" + (f"\n{g.setting}" if g.setting else "") for g in groups]
    means = [g.stats[HEADLINE][0] or 0.0 for g in groups]
    errs = [g.stats[HEADLINE][1] or 0.0 for g in groups]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) + 1.5), 4.0))
    x = range(len(groups))
    ax.bar(x, means, yerr=errs, capsize=3, color="tab:blue", label="ours: test top-1 @best val (mean ± std)")
    pub = [(i, g.stats["published"]) for i, g in enumerate(groups) if g.stats["published"] is not None]
    if pub:
        ax.scatter([i for i, _ in pub], [v for _, v in pub], marker="_", s=400, color="tab:red", zorder=3,
                   label="published")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_rich(groups: list[Group], baseline: str | None, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in headers(baseline, groups):
        t.add_column(h, overflow="fold")
    for r in text_rows(groups):
        t.add_row(*r)
    import shutil

    Console(width=max(160, shutil.get_terminal_size().columns)).print(t)


def write_all(groups: list[Group], bench_dir: Path, baseline: str | None, notes: list[str] = ()) -> dict[str, Path]:
    """Write table.md, table.csv and table.png into the bench folder; returns their paths."""
    bench_dir = Path(bench_dir)
    paths = {k: bench_dir / v for k, v in FILES.items()}
    paths["md"].write_text(markdown(groups, baseline, list(notes)))
    paths["csv"].write_text(csv_text(groups, baseline))
    chart(groups, paths["png"])
    return paths
