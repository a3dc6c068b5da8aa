"""The Optuna side of a sweep: the SQLite study in the sweep folder, its sampler and pruner, one objective.

The study lives in ``<sweep>/study.db`` so a killed sweep resumes: :func:`recover_killed` marks the
trials a dead process left ``RUNNING`` as failed and queues their parameters again. Each trial is
an ordinary run in ``<sweep>/trials/trial-NNN``, trained in this process with a callback that
reports every epoch's validation top-1 to the pruner (Optuna's MedianPruner); a pruned run stops
cleanly after that epoch (``summary.json``: ``stopped_by: pruned``) and the trial is recorded as
pruned. The objective is the best validation top-1; trials never score the test split
(``train.test_at_end=false``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from kdlab.errors import KdlabError
from kdlab.workflow.sweep_space import Space, as_overrides, suggest

STUDY_NAME = "kdlab-sweep"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(sweep_dir: Path) -> str:
    return f"sqlite:///{(Path(sweep_dir) / 'study.db').resolve()}"


def make_sampler(space: Space, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = space.seed + worker  # parallel workers must not draw the same start-up points
    if space.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.choices for p in space.params}, seed=seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(space: Space) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner() if space.pruner is None else optuna.pruners.MedianPruner(**space.pruner)


def open_study(sweep_dir: Path, space: Space, worker: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=STUDY_NAME, storage=storage_url(sweep_dir), direction="maximize",
                               sampler=make_sampler(space, worker), pruner=make_pruner(space), load_if_exists=True)


def recover_killed(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a killed sweep: mark them failed and queue their parameters again.

    Only called while this process holds the sweep folder's lock, so no live process owns them.
    """
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return [t.number for t in stale]


def count_done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


class PruneOnVal:
    """Trainer callback: report each epoch's val top-1 to the trial; ask the run to stop when pruned."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_validation(self, epoch: int, step: int, metrics: dict[str, float]) -> str | None:
        self.trial.report(float(metrics["top1"]), epoch)
        return "pruned" if self.trial.should_prune() else None


def make_objective(config: str, overrides: list[str], space: Space, sweep_dir: Path):
    """The objective: one run per trial, its best val top-1 (the test split is never scored)."""
    from kdlab.config import load_config
    from kdlab.experiment import run_experiment

    def objective(trial: optuna.Trial) -> float:
        picks = suggest(trial, space)
        name = f"trial-{trial.number:03d}"
        trial.set_user_attr("run", name)
        logging.getLogger("kdlab").info("sweep trial %d: %s", trial.number, " ".join(as_overrides(picks)))
        try:
            cfg = load_config(config, [*overrides, *as_overrides(picks), f"out_dir={Path(sweep_dir) / 'trials'}",
                                       f"name={name}", "train.test_at_end=false"])
            summary = run_experiment(cfg, overwrite=True, callbacks=[PruneOnVal(trial)])
        except KdlabError as e:  # recorded as a failed trial (NaN), one line, and the sweep goes on
            trial.set_user_attr("error", str(e))
            logging.getLogger("kdlab").warning("sweep trial %d failed: %s", trial.number, e)
            return float("nan")
        trial.set_user_attr("epochs_run", summary.get("epochs_run"))
        if summary.get("stopped_by") == "pruned":
            raise optuna.TrialPruned(f"pruned after epoch {summary.get('epochs_run')}")
        if summary.get("val_top1") is None:
            raise KdlabError("the sweep objective needs a val split; set data.val_fraction > 0")
        return float(summary["val_top1"])

    return objective


def optimize(study: optuna.Study, objective: Any, n_trials: int | None, total: int) -> None:
    """Run trials until ``total`` are complete or pruned (a failed trial does not count)."""
    stop = optuna.study.MaxTrialsCallback(total, states=DONE)
    study.optimize(objective, n_trials=n_trials, callbacks=[stop], catch=(KdlabError,))
