"""``kdlab report``, part 3: the PNG figures (matplotlib, Agg back-end, no display needed).

Each function draws one figure from numbers (:mod:`kdlab.workflow.report_stats`) or logged records
and writes it to the given path. :func:`training_curves` overlays every run: one panel per loss
term (the terms the methods logged, plus the total ``loss``), train and val top-1, and the LR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kdlab.workflow.report_stats import MAX_DIFF  # noqa: E402

DPI = 100


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curve_panels(runs: dict[str, list[dict[str, Any]]], not_terms: set[str]) -> dict[str, dict[str, tuple]]:
    """``{panel: {run: (steps, values)}}`` from metrics.jsonl records: every loss term, ``loss``,
    ``train top-1``, ``val top-1`` and ``lr``."""
    panels: dict[str, dict[str, tuple]] = {}

    def add(panel: str, run: str, step: int, value: Any) -> None:
        if isinstance(value, int | float):
            xs, ys = panels.setdefault(panel, {}).setdefault(run, ([], []))
            xs.append(step)
            ys.append(float(value))

    for run, records in runs.items():
        for r in records:
            if r.get("event") == "train":
                for k, v in r.items():
                    if k not in not_terms:
                        add(f"term: {k}", run, r["step"], v)
                add("loss (total)", run, r["step"], r.get("loss"))
                add("train top-1 (%)", run, r["step"], r.get("top1"))
                add("lr", run, r["step"], r.get("lr"))
            elif r.get("event") == "eval" and r.get("split") == "val":
                add("val top-1 (%)", run, r["step"], r.get("top1"))
    order = sorted(p for p in panels if p.startswith("term: "))
    order += [p for p in ("loss (total)", "train top-1 (%)", "val top-1 (%)", "lr") if p in panels]
    return {p: panels[p] for p in order}


def training_curves(panels: dict[str, dict[str, tuple]], path: Path) -> Path:
    """One panel per curve kind, runs overlaid (x: optimizer step); a run keeps its colour in every panel."""
    names = list(dict.fromkeys(run for curves in panels.values() for run in curves))
    colour = {run: f"C{i % 10}" for i, run in enumerate(names)}
    n = max(1, len(panels))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for run, (xs, ys) in curves.items():
            ax.plot(xs, ys, marker="o", markersize=2, label=run, color=colour[run])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _save(fig, path)


def _class_cmap(n: int) -> str:
    return "tab10" if n <= 10 else "tab20" if n <= 20 else "nipy_spectral"


def tsne_figure(points: np.ndarray, labels: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=_class_cmap(len(classes)),
                    s=8, vmin=0, vmax=max(1, len(classes) - 1))
    if len(classes) <= 20:
        handles = [plt.Line2D([], [], marker="o", ls="", color=sc.cmap(sc.norm(i)), label=c)
                   for i, c in enumerate(classes)]
        ax.legend(handles=handles, fontsize=6, loc="best", markerscale=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def correlation_figure(diff: np.ndarray, title: str, path: Path, max_diff: float = MAX_DIFF) -> Path:
    """``diff / max_diff`` on a fixed 0..1 scale (mdistiller's convention)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(diff / max_diff, vmin=0.0, vmax=1.0, cmap="PuBuGn")
    fig.colorbar(im, ax=ax, label=f"|mean logit teacher - student| / {max_diff:g}")
    ax.set_title(title)
    ax.set_xlabel("logit of class")
    ax.set_ylabel("true class")
    return _save(fig, path)


def confusion_figure(cm: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5))
    rows = cm.sum(1, keepdims=True).clip(min=1)
    im = ax.imshow(cm / rows, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    if len(classes) <= 20:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def per_class_figure(acc: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(classes)), 3.5))
    ax.bar(range(len(acc)), acc, color="tab:blue")
    ax.axhline(np.nanmean(acc), color="tab:red", lw=1, label=f"mean {np.nanmean(acc):.1f}%")
    if len(classes) <= 20:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("test top-1 (%)")
    ax.set_xlabel("class")
    ax.legend(fontsize=7)
    ax.set_title(title)
    return _save(fig, path)


def reliability_figure(cal: dict, title: str, path: Path) -> Path:
    edges = np.asarray(cal["edges"])
    mids = (edges[:-1] + edges[1:]) / 2
    count = np.asarray(cal["count"])
    acc = np.where(count > 0, np.asarray(cal["accuracy"]), np.nan)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.bar(mids, acc, width=edges[1] - edges[0], edgecolor="black", alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"confidence ({cal['bins']} equal-width bins)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {cal['ece']:.2f}%")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)
