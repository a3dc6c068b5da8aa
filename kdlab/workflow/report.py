"""``kdlab report RUN [RUN ...] --out DIR``: figures, ``summary.md``, ``report.json`` and ``report.html``.

For every target (run folder, kdlab checkpoint or safetensors export; see
:mod:`kdlab.workflow.report_runs`) the best weights are run once over the test split (fp32) and

* ``curves.png`` — every loss term, the total loss, train and val top-1 and the LR, runs overlaid
  (from ``metrics.jsonl``; a checkpoint alone has none);
* ``tsne_<run>.png`` (+ ``tsne_<run>.csv``: the test index, label and 2-D point of each sampled image)
  — t-SNE of the penultimate features of a seeded sample of test images;
* ``confusion_<run>.png``, ``per_class_<run>.png``, ``reliability_<run>.png`` (ECE in the title);
* with a teacher whose checkpoint exists: ``correlation_<run>.png`` (mdistiller's class-mean logit
  difference) and the teacher-student agreement and KL in the table.

The numbers are in ``report.json`` and in the table of ``summary.md`` and ``report.html``
(self-contained: figures embedded). Definitions: :mod:`kdlab.workflow.report_stats`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from kdlab.engine.checkpoint import write_text_atomic
from kdlab.errors import KdlabError
from kdlab.workflow import report_figures as figs
from kdlab.workflow import report_stats as stats
from kdlab.workflow.report_page import html_page, markdown_summary
from kdlab.workflow.report_runs import NOT_TERMS, Outputs, RunInfo, collect_outputs, open_run, unique_labels


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _write_tsne_csv(path: Path, idx: Any, labels: Any, points: Any) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["test_index", "label", "x", "y"])
        for i, lab, (x, y) in zip(idx.tolist(), labels.tolist(), points.tolist()):
            w.writerow([i, lab, f"{x:.6g}", f"{y:.6g}"])


def run_figures(run: RunInfo, out: Outputs, out_dir: Path, *, tsne_max: int, seed: int) -> tuple[dict, list[Path]]:
    """The per-run figures and numbers."""
    slug, c = _slug(run.label), len(out.classes)
    pred = out.logits.argmax(1)
    row: dict[str, Any] = {"run": run.label, "method": run.cfg.method.name, "student": run.cfg.student.name,
                           "teacher": run.cfg.teacher.name or None,
                           "test_top1": pred.eq(out.labels).double().mean().item() * 100.0,
                           "test_images": len(out.labels),
                           "val_top1": (run.summary or {}).get("val_top1"),
                           "summary_test_top1_at_best_val": (run.summary or {}).get("test_top1_at_best_val")}
    paths = []
    idx, pts = stats.tsne_points(out.features, tsne_max, seed)
    sampled = out.labels[idx].numpy()
    _write_tsne_csv(out_dir / f"tsne_{slug}.csv", idx, sampled, pts)
    paths.append(figs.tsne_figure(pts, sampled, out.classes, f"{run.label}: t-SNE of penultimate features "
                                  f"({len(idx)} test images, seed {seed})", out_dir / f"tsne_{slug}.png"))
    cm = stats.confusion(pred, out.labels, c).numpy()
    paths.append(figs.confusion_figure(cm, out.classes, f"{run.label}: confusion (test)",
                                       out_dir / f"confusion_{slug}.png"))
    acc = stats.per_class_accuracy(pred, out.labels, c).numpy()
    paths.append(figs.per_class_figure(acc, out.classes, f"{run.label}: per-class accuracy (test)",
                                       out_dir / f"per_class_{slug}.png"))
    cal = stats.calibration(out.logits, out.labels)
    row["ece"] = cal["ece"]
    paths.append(figs.reliability_figure(cal, f"{run.label}: reliability (test)", out_dir / f"reliability_{slug}.png"))
    row["calibration"] = cal
    row["per_class_top1"] = acc.tolist()
    if out.teacher_logits is not None:
        row.update(stats.agreement(out.logits, out.teacher_logits))
        diff = stats.correlation_difference(out.logits, out.teacher_logits, out.labels, c)
        row["corr_diff_mean"], row["corr_diff_max"] = diff.mean().item(), diff.max().item()
        paths.append(figs.correlation_figure(diff.numpy(), f"{run.label}: teacher - student class-mean logits",
                                             out_dir / f"correlation_{slug}.png"))
    return row, paths


def make_report(targets: list[str | Path], out_dir: str | Path, *, overrides: list[str] | None = None,
                tsne_max: int = 500, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Write the report for ``targets`` into ``out_dir``; returns what ``report.json`` holds."""
    if not targets:
        raise KdlabError("kdlab report needs at least one run folder or checkpoint")
    out_dir = Path(out_dir).expanduser()
    runs = [open_run(t, overrides) for t in targets]  # every target checked before any work
    for run, label in zip(runs, unique_labels([r.label for r in runs])):
        run.label = label
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    figures: dict[str, list[Path]] = {}
    with_records = {r.label: r.records for r in runs if r.records}
    if with_records:
        panels = figs.curve_panels(with_records, NOT_TERMS)
        figures["Training curves"] = [figs.training_curves(panels, out_dir / "curves.png")]
    notes += [f"{r.label}: no metrics.jsonl (a checkpoint alone): no training curves" for r in runs if not r.records]
    rows = []
    for run in runs:
        out = collect_outputs(run, device)
        if out.teacher_note:
            notes.append(f"{run.label}: {out.teacher_note}")
        row, paths = run_figures(run, out, out_dir, tsne_max=tsne_max, seed=seed)
        rows.append(row)
        figures[run.label] = paths
    result = {"runs": rows, "notes": notes, "figures": {k: [p.name for p in v] for k, v in figures.items()},
              "ece_bins": stats.ECE_BINS, "correlation_max_diff": stats.MAX_DIFF, "tsne_seed": seed}
    write_text_atomic(out_dir / "report.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(out_dir / "summary.md", markdown_summary(rows, notes, figures) + "\n")
    write_text_atomic(out_dir / "report.html", html_page(rows, notes, figures) + "\n")
    return result
