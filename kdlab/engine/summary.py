"""The end of a run: the test split scored once (final and best-val weights) and ``summary.json``.

Keys are named after the task's primary metric ``p`` (classification: ``top1``): ``val_<p>`` (best
val), ``test_<p>_at_best_val``, ``test_<p>_last``, ``val_<p>_last``; ``splits`` says in words where
each number comes from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdlab.engine.callbacks import call_summary
from kdlab.engine.checkpoint import load_checkpoint_file

if TYPE_CHECKING:
    from kdlab.engine.trainer import Trainer


def _test_scores(t: Trainer) -> tuple[float | None, float | None, int | None]:
    """(test at best val, test last, images) or Nones when the test split is not scored."""
    p = t.evaluator.primary
    if not (t.cfg.train.test_at_end and t.test_loader is not None and t.global_step > 0):
        return None, None, None
    m_last = t.evaluate(t.test_loader)
    t.logger.log_eval("test", epoch=t.epochs_run, step=t.global_step, metrics=m_last, weights="last")
    last, n = m_last[p], int(m_last["n"])
    if t.val_loader is None or t.best["step"] is None or t.best["step"] == t.global_step:
        return last, last, n
    keep = {k: v.detach().clone() for k, v in t.distiller.state_dict_without_teacher().items()}
    best = load_checkpoint_file(t.folder.best_file())
    t.distiller.load_state_dict_without_teacher(best["distiller"])
    try:
        m_best = t.evaluate(t.test_loader)
    finally:
        t.distiller.load_state_dict_without_teacher(keep)
    t.logger.log_eval("test", epoch=t.best["epoch"], step=t.best["step"], metrics=m_best, weights="best")
    return m_best[p], last, n


def finish(t: Trainer, stopped_by: str) -> dict[str, Any]:
    """Score the test split, write ``summary.json``, print one line, return the summary."""
    p = t.evaluator.primary
    has_val = t.val_loader is not None
    test_best, test_last, test_n = _test_scores(t)
    if not has_val:
        t.best = {"value": None, "epoch": t.epochs_run, "step": t.global_step}
    not_run = "not run (no test loader or train.test_at_end=false)"
    summary = {
        "name": t.cfg.name,
        "metric": p,
        "best_epoch": t.best["epoch"],
        f"val_{p}": t.best["value"],
        f"test_{p}_at_best_val": test_best,
        f"test_{p}_last": test_last,
        "test_images": test_n,
        "epochs_run": t.epochs_run,
        "steps": t.global_step,
        "wall_s": round(t.wall(), 3),
        "img_per_s": t.images_seen / t.train_seconds if t.train_seconds > 0 else 0.0,
        f"val_{p}_last": t.last_val[p] if t.last_val else None,
        "stopped_by": stopped_by,
        "plateau_lr_drops": t.early_stop["drops"],
        "splits": {
            f"val_{p}": ("val split (held out from training data), at the best epoch" if has_val
                         else "none: no val loader, so best = last"),
            "best_epoch": f"chosen by val {p}" if has_val else "no val loader: best = last (final weights)",
            f"test_{p}_at_best_val": "test split, weights of checkpoints/best.pt" if test_best is not None else not_run,
            f"test_{p}_last": "test split, final weights" if test_last is not None else not_run,
            f"val_{p}_last": "val split, final weights" if has_val else "none",
        },
    }
    call_summary(t.callbacks, summary)
    t.logger.write_summary(summary)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    t.logger.print(f"{t.cfg.name}: done after {t.global_step} steps (stopped by {stopped_by}); best epoch "
                   f"{summary['best_epoch']}, val_{p} {fmt(summary[f'val_{p}'])}, test_{p} at best {fmt(test_best)}, "
                   f"last {fmt(test_last)}")
    return summary
