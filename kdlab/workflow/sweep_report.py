"""A sweep's report: trials table (Markdown, CSV, rich), the best trial as a ready-to-run YAML, and
Optuna's parameter importances as a PNG bar chart (skipped, with a note, below two complete trials)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kdlab.workflow.sweep_space import as_overrides


def _rows(study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    head = ["trial", "state", "val top-1", "epochs", *keys, "run"]
    rows = []
    for t in trials:
        value = t.value if t.state == TrialState.COMPLETE else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append([str(t.number), t.state.name.lower(), "-" if value is None else f"{value:.2f}",
                     str(t.user_attrs.get("epochs_run", "-")), *(str(t.params.get(k, "-")) for k in keys),
                     str(t.user_attrs.get("run", "-"))])
    return head, rows


def best_config_yaml(study: optuna.Study, config: str, overrides: list[str]) -> tuple[str, optuna.trial.FrozenTrial]:
    """The base config with the best trial's parameters, as YAML that ``kdlab train`` runs as is."""
    from kdlab.config import load_config

    best = study.best_trial
    cfg = load_config(config, [*overrides, *as_overrides(best.params)])
    cfg.name = f"{cfg.name}-sweep-best"
    header = (f"# best trial {best.number} of the sweep of {config}: val top-1 {best.value:.2f}\n"
              f"# parameters: {' '.join(as_overrides(best.params))}\n")
    return header + cfg.to_yaml(), best


def importance_png(study: optuna.Study, path: Path) -> str | None:
    """Bar chart of Optuna's parameter importances; returns a note instead when it cannot be computed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"importance plot skipped: {len(complete)} complete trial(s), it needs 2"
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:
        return f"importance plot skipped: {e}"
    if not imp:
        return "importance plot skipped: no parameter varied across complete trials"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 1 + 0.4 * len(names)))
    ax.barh(names, [imp[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance for val top-1 (Optuna fANOVA)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_report(study: optuna.Study, sweep_dir: Path, config: str, overrides: list[str], echo=print) -> dict:
    from rich.console import Console
    from rich.table import Table

    head, rows = _rows(study)
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]
    (sweep_dir / "trials.md").write_text("\n".join(md) + "\n")
    buf = io.StringIO()
    csv.writer(buf).writerows([head, *rows])
    (sweep_dir / "trials.csv").write_text(buf.getvalue())
    table = Table(title=f"sweep {sweep_dir}: objective = best val top-1")
    for h in head:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    out = {"sweep_dir": str(sweep_dir), "trials": len(rows),
           "pruned": sum(r[1] == "pruned" for r in rows), "complete": sum(r[1] == "complete" for r in rows)}
    if out["complete"]:
        text, best = best_config_yaml(study, config, overrides)
        (sweep_dir / "best.yaml").write_text(text)
        out.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        echo(f"best trial {best.number}: val top-1 {best.value:.2f}; train it with: "
             f"kdlab train {sweep_dir / 'best.yaml'}")
    note = importance_png(study, sweep_dir / "importance.png")
    if note:
        echo(note)
    echo(f"wrote {sweep_dir / 'trials.md'}, {sweep_dir / 'trials.csv'}"
         + ("" if note else f", {sweep_dir / 'importance.png'}") + (", best.yaml" if out["complete"] else ""))
    return out
