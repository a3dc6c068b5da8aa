"""kdlab sweep: search-space parsing and its one-line errors (checked before any trial), overrides that
read back unchanged, and the real thing on digits: 4 trials with a deliberately bad learning-rate
choice (at least one trial pruned on val top-1), a SIGKILL mid-trial and a resume that repeats no
finished trial, and a best.yaml that reproduces the best trial's val top-1 when trained again
(deterministic CPU mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from kdlab.cli import main
from kdlab.config import load_config, parse_overrides
from kdlab.experiment import run_experiment
from kdlab.workflow.sweep_space import as_overrides, load_space

REPO = Path(__file__).resolve().parents[1]
DIGITS = {"name": "digits-ce", "data": {"dataset": "digits", "val_fraction": 0.2, "image_size": 16,
                                        "crop_padding": 2, "batch_size": 64, "num_workers": 0, "in_memory": True},
          "student": {"name": "resnet8"}, "method": {"name": "ce"}, "optim": {"lr": 0.05},
          "schedule": {"name": "constant", "epochs": 3},
          "train": {"device": "cpu", "amp": "off", "progress": False, "tensorboard": False, "deterministic": True}}
# a deliberately bad space: half of it cannot learn in 3 epochs. With sampler seed 6, TPE's random
# start-up draws lr 0.1, 0.1, 1e-5, 0.1: the third trial falls below the median at epoch 1.
BAD = {"seed": 6, "pruner": {"n_startup_trials": 1, "n_warmup_steps": 0},
       "params": {"optim.lr": {"type": "categorical", "choices": [0.1, 1.0e-5]}}}


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("space, needle", [
    (["optim.lr"], "must be a mapping of config keys to distributions"),
    ({"optim.lr": {"type": "gaussian", "low": 0, "high": 1}}, "unknown type 'gaussian'"),
    ({"optim.lr": [0.1, 0.2]}, "optim.lr must be a mapping with a type"),
    ({"optim.lr": {"type": "float", "low": 0.2, "high": 0.1}}, "low must be below high"),
    ({"optim.lr": {"type": "float", "low": "a", "high": 0.1}}, "low must be a number"),
    ({"optim.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log-scaled range needs low > 0"),
    ({"optim.lr": {"type": "categorical"}}, "categorical needs a non-empty list 'choices'"),
    ({"optim.lr": {"type": "categorical", "choices": [0.1, 0.0]}}, "optim.lr=0.0 gives a bad config"),
    ({"method.params.tempreture": {"type": "float", "low": 1, "high": 4}}, "has no hyper-parameter 'tempreture'"),
    ({"sampler": "grid", "optim.lr": {"type": "float", "low": 0.01, "high": 0.1}}, "grid needs categorical"),
])
def test_bad_space_is_one_line_before_any_trial(tmp_path, capsys, space, needle):
    cfg = write(tmp_path / "c.yaml", DIGITS)
    sp = write(tmp_path / "s.yaml", space)
    out = tmp_path / "sw"
    assert main(["sweep", str(cfg), "--space", str(sp), "--trials", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    assert not (out / "study.db").exists()


def test_shipped_spaces_parse():
    for name in ("dkd_beta_temperature", "compkd_ckd", "compkd_relational", "compkd_mixup", "compkd_white_box",
                 "compkd_white_box_ckd"):
        assert load_space(name).params


def test_overrides_read_back_unchanged():
    picks = {"optim.lr": 1e-5, "method.params.temperature": 3.5, "optim.name": "adamw", "optim.nesterov": True,
             "data.subset_size": 4000}
    assert parse_overrides(as_overrides(picks)) == {"optim": {"lr": 1e-5, "name": "adamw", "nesterov": True},
                                                    "method": {"params": {"temperature": 3.5}},
                                                    "data": {"subset_size": 4000}}


def test_recover_killed_marks_running_trials_failed_and_requeues(tmp_path):
    from kdlab.workflow.sweep_study import count_done, open_study, recover_killed

    space = load_space(write(tmp_path / "s.yaml", BAD))
    study = open_study(tmp_path, space)
    t = study.ask()
    lr = t.suggest_categorical("optim.lr", [0.1, 1.0e-5])  # left RUNNING, as by a SIGKILL
    assert recover_killed(study) == [t.number]
    again = open_study(tmp_path, space)
    assert again.trials[0].state == optuna.trial.TrialState.FAIL and count_done(again) == 0
    nxt = again.ask()
    assert nxt.suggest_categorical("optim.lr", [0.1, 1.0e-5]) == lr and nxt.user_attrs["retry_of"] == t.number
    assert recover_killed(again) == [nxt.number]


def sweep(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdlab", "sweep", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_sweep_prunes_resumes_after_sigkill_and_best_yaml_reproduces(tmp_path):
    cfg = write(tmp_path / "c.yaml", DIGITS)
    sp = write(tmp_path / "bad.yaml", BAD)
    out = tmp_path / "sw"
    args = [str(cfg), "--space", str(sp), "--trials", "4", "--out", str(out)]
    trials = out / "trials"

    p = sweep(*args)  # killed once two trials are done and the third has started
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if (trials / "trial-001" / "summary.json").is_file() and (trials / "trial-002").is_dir():
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    p.wait()
    assert p.returncode == -signal.SIGKILL, p.stdout.read()
    stamps = {t: (trials / t / "summary.json").stat().st_mtime_ns for t in ("trial-000", "trial-001")}

    p = sweep(*args)
    text = p.communicate(timeout=600)[0]
    assert p.returncode == 0, text
    study = optuna.load_study(study_name="kdlab-sweep", storage=f"sqlite:///{out / 'study.db'}")
    by_state = {s: [t for t in study.trials if t.state == s] for s in optuna.trial.TrialState}
    done = by_state[optuna.trial.TrialState.COMPLETE] + by_state[optuna.trial.TrialState.PRUNED]
    assert len(done) == 4
    assert len(by_state[optuna.trial.TrialState.PRUNED]) >= 1
    for t in by_state[optuna.trial.TrialState.PRUNED]:  # a pruned run ended cleanly and says so
        s = json.loads((trials / t.user_attrs["run"] / "summary.json").read_text())
        assert s["stopped_by"] == "pruned" and s["test_top1_last"] is None  # the test split was never scored
    assert {t: (trials / t / "summary.json").stat().st_mtime_ns for t in stamps} == stamps  # not re-run
    assert [t.number for t in done][:2] == [0, 1]
    killed = [t for t in by_state[optuna.trial.TrialState.FAIL] if t.number == 2]
    assert killed, text  # the trial running at the kill is recorded as failed ...
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 2]
    assert retry and retry[0].params == killed[0].params  # ... and retried with its own parameters
    assert "were killed mid-run" in text
    assert len({t.user_attrs["run"] for t in done}) == 4

    # best.yaml reproduces the best trial's val top-1
    best = study.best_trial
    assert (out / "best.yaml").read_text().startswith(f"# best trial {best.number}")
    cfg2 = load_config(out / "best.yaml", [f"out_dir={tmp_path / 'again'}"])
    assert cfg2.optim.lr == best.params["optim.lr"]
    summary = run_experiment(cfg2)
    assert summary["val_top1"] == best.value
    assert (out / "importance.png").is_file() or "importance plot skipped" in text
    assert (out / "trials.md").read_text().count("\n") == 2 + len(study.trials)


@pytest.mark.slow
def test_sweep_jobs_runs_worker_processes_on_one_study(tmp_path):
    cfg = write(tmp_path / "c.yaml", {**DIGITS, "schedule": {"name": "constant", "epochs": 1}})
    sp = write(tmp_path / "s.yaml", {"pruner": "none", "optim.lr": {"type": "float", "low": 0.01, "high": 0.1,
                                                                     "log": True}})
    out = tmp_path / "sw"
    p = sweep(str(cfg), "--space", str(sp), "--trials", "2", "--jobs", "2", "--out", str(out))
    text = p.communicate(timeout=600)[0]
    assert p.returncode == 0, text
    study = optuna.load_study(study_name="kdlab-sweep", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 2 <= len(done) <= 3  # two workers may overshoot by one
    assert sorted((out).glob("worker-*.log")) == [out / "worker-0.log", out / "worker-1.log"]
    assert (out / "best.yaml").is_file() and (out / "importance.png").is_file()
