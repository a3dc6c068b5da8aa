"""``kdlab report``, part 4: the pages — ``summary.md`` and one self-contained ``report.html``.

The HTML embeds every figure as a base64 ``data:image/png`` URI and carries its own CSS: no file,
link or script outside the page is referenced, so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

COLUMNS = [("run", "run"), ("method", "method"), ("student", "student"), ("teacher", "teacher"),
           ("test_top1", "test top-1 (best ckpt)"), ("val_top1", "val top-1"), ("ece", "ECE (%)"),
           ("top1_agreement", "T-S agreement (%)"), ("mean_kl", "mean KL(T‖S)"),
           ("corr_diff_mean", "corr. diff mean"), ("corr_diff_max", "corr. diff max")]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def markdown_summary(rows: list[dict[str, Any]], notes: list[str], figures: dict[str, list[Path]]) -> str:
    """``summary.md``: a table of the runs' numbers, the notes, and links to the PNG files."""
    lines = ["# kdlab report", "", "| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    lines += ["", "Test split, best checkpoint, fp32. ECE: 15 equal-width confidence bins. Agreement and KL "
              "(teacher || student, T=1): test split, when the teacher's checkpoint is available. Correlation "
              "difference: |class-mean logits of teacher - student|, diagonal zeroed (mdistiller's figure).", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += ["## Figures", ""]
    for section, paths in figures.items():
        lines += [f"### {section}", "", *[f"![{p.stem}]({p.name})" for p in paths], ""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_page(rows: list[dict[str, Any]], notes: list[str], figures: dict[str, list[Path]]) -> str:
    """``report.html``: the same content, figures embedded."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for _, h in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(_cell(r.get(k)))}</td>" for k, _ in COLUMNS) + "</tr>" for r in rows)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>kdlab report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:3px 8px;text-align:right}img{max-width:100%;margin:6px}"
             "figure{display:inline-block;margin:0}</style></head><body>",
             "<h1>kdlab report</h1>", f"<table><tr>{head}</tr>{body}</table>",
             "<p>Test split, best checkpoint, fp32. ECE: 15 equal-width confidence bins. Agreement and KL "
             "(teacher || student, T=1) on the test split. Correlation difference: |class-mean logits of "
             "teacher - student|, diagonal zeroed.</p>"]
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    for section, paths in figures.items():
        parts.append(f"<h2>{esc(section)}</h2>")
        parts += [f"<figure><img alt='{esc(p.stem)}' src='{_data_uri(p)}'><figcaption>{esc(p.stem)}</figcaption>"
                  "</figure>" for p in paths]
    parts.append("</body></html>")
    return "\n".join(parts)
