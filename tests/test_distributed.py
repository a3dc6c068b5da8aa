"""Multi-process training on CPU (gloo, 2 processes under torchrun) against one process.

Each test starts real torchrun processes on scikit-learn's digits (a 128-image subset, resnet8 with
BatchNorm and no dropout, SyncBatchNorm on, fp32, deterministic) and compares the weights with a
single-process run of the same global batch: they must agree to 1e-6, and the two ranks exactly.
Each test starts torch in 2-3 fresh processes (20-45 s on a busy 2-core machine), so all are
marked slow; tests/test_distributed_units.py checks the pieces in the default suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from kdlab.config import load_config
from kdlab.experiment import run_experiment

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"

BASE = {
    "data": {"dataset": "digits", "root": ".", "batch_size": 32, "eval_batch_size": 50, "subset_size": 160,
             "val_fraction": 0.2, "crop_padding": 1, "num_workers": 0},
    "student": {"name": "resnet8"},
    "method": {"name": "ce"},
    "optim": {"lr": 0.05},
    "schedule": {"name": "multistep", "epochs": 2, "milestones": [1]},
    "train": {"device": "cpu", "amp": "off", "channels_last": "off", "deterministic": True, "sync_bn": True,
              "tensorboard": False, "progress": False},
}


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT"):
        e.pop(k, None)
    return e


def torchrun(args: list[str], *, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write_cfg(path: Path, out: Path, name: str, **sections) -> Path:
    cfg = {k: dict(v) for k, v in BASE.items()}
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    cfg.update(name=name, out_dir=str(out))
    path.write_text(yaml.safe_dump(cfg))
    return path


def last_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["distiller"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def two_rank_states(cfg_path: Path, dump: Path) -> tuple[dict, dict]:
    """Run ``cfg_path`` on 2 processes (torchrun + the worker); every rank's final distiller state."""
    r = torchrun([str(WORKER), str(cfg_path), str(dump)])
    assert r.returncode == 0, r.stderr[-3000:]
    return tuple(torch.load(dump / f"rank{i}.pt", weights_only=True) for i in (0, 1))


def run_files(run_dir: Path) -> list[str]:
    """Every file a run wrote, relative to its folder."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def single_run(cfg_path: Path, **kw) -> dict:
    cfg = load_config(str(cfg_path), [])
    run_experiment(cfg, overwrite=True, **kw)
    return last_state(Path(cfg.out_dir) / cfg.name)


@pytest.fixture(scope="module")
def ce_single(tmp_path_factory):
    """The single-process reference run (2 epochs of 4 global batches of 32)."""
    tmp = tmp_path_factory.mktemp("ddp_single")
    cfg = write_cfg(tmp / "ce.yaml", tmp / "runs", "one")
    return single_run(cfg), tmp / "runs" / "one"


def test_two_processes_train_like_one_and_only_rank0_writes(ce_single, tmp_path):
    ref, ref_dir = ce_single
    cfg = write_cfg(tmp_path / "ce.yaml", tmp_path / "runs", "two")
    rank0, rank1 = two_rank_states(cfg, tmp_path / "dump")
    assert max_diff(rank0, rank1) == 0.0  # DDP: every rank applies the same averaged update
    assert max_diff(rank0, ref) < 1e-6  # SyncBN + global-batch loss scale: the single-process update
    run = tmp_path / "runs" / "two"
    assert max_diff(last_state(run), ref) < 1e-6
    # rank 0 alone wrote: the same files and the same number of log records as one process
    assert run_files(run) == run_files(ref_dir)
    lines = lambda d: (d / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    assert len(lines(run)) == len(lines(ref_dir))
    one = yaml.safe_load((ref_dir / "summary.json").read_text())
    two = yaml.safe_load((run / "summary.json").read_text())
    assert two["val_top1"] == one["val_top1"] and two["test_images"] == one["test_images"] == 359


def test_crd_banks_are_identical_on_both_ranks_and_equal_one_process(tmp_path):
    teacher = tmp_path / "teacher.pt"
    from kdlab.models import create_model

    torch.manual_seed(1)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), teacher)
    crd = {"method": {"name": "crd", "params": {"nce_k": 16, "feat_dim": 16}},
           "teacher": {"name": "resnet8", "checkpoint": str(teacher)}, "schedule": {"epochs": 1, "milestones": [1]}}
    cfg1 = write_cfg(tmp_path / "one.yaml", tmp_path / "runs", "crd1", **crd)
    cfg2 = write_cfg(tmp_path / "two.yaml", tmp_path / "runs", "crd2", **crd)
    ref = single_run(cfg1)
    rank0, rank1 = two_rank_states(cfg2, tmp_path / "dump")
    banks = ("memory.memory_s", "memory.memory_t", "memory.z")
    for k in banks:
        assert torch.equal(rank0[k], rank1[k]), k
    for k in banks[:2]:  # unit vectors
        assert float((rank0[k] - ref[k]).abs().max()) < 1e-6, k
    torch.testing.assert_close(rank0["memory.z"], ref["memory.z"], rtol=1e-5, atol=0)  # ~8e4: sums of exp()
    assert max_diff({k: v for k, v in rank0.items() if k != "memory.z"},
                    {k: v for k, v in ref.items() if k != "memory.z"}) < 1e-6
    # the banks did move: every training index was written (momentum update, then L2-normalised)
    norms = rank0["memory.memory_s"].norm(dim=1)
    assert int(torch.isclose(norms, torch.ones_like(norms), atol=1e-5).sum()) == 128


def test_the_cached_teacher_path_trains_like_one_process(tmp_path):
    teacher = tmp_path / "teacher.pt"
    from kdlab.models import create_model

    torch.manual_seed(2)
    torch.save(create_model("resnet8", num_classes=10).state_dict(), teacher)
    kd = {"method": {"name": "kd"}, "teacher": {"name": "resnet8", "checkpoint": str(teacher)},
          "data": {"cache_teacher": True}, "schedule": {"epochs": 1, "milestones": [1]}}
    ref = single_run(write_cfg(tmp_path / "one.yaml", tmp_path / "runs", "kd1", **kd))
    cfg = write_cfg(tmp_path / "two.yaml", tmp_path / "runs", "kd2", **kd)
    r = torchrun(["-m", "kdlab", "train", str(cfg)])
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "kd2"
    assert (run / "teacher_logits.pt").is_file()  # written once, by rank 0
    assert max_diff(last_state(run), ref) < 1e-6


def test_a_two_process_run_resumed_with_one_process_continues_exactly(ce_single, tmp_path):
    ref, _ = ce_single
    cfg = write_cfg(tmp_path / "ce.yaml", tmp_path / "runs", "moved")
    r = torchrun(["-m", "kdlab", "train", str(cfg), "--overwrite", "train.max_steps=5"])
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(tmp_path / "runs" / "moved" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["global_step"]) == (2, 1, 5)  # stopped mid-epoch 2
    run_experiment(load_config(str(cfg), []), resume=True)  # one process continues the same global batches
    assert max_diff(last_state(tmp_path / "runs" / "moved"), ref) < 1e-6


def test_a_batch_that_does_not_divide_among_the_processes_is_one_line(tmp_path):
    cfg = write_cfg(tmp_path / "ce.yaml", tmp_path / "runs", "odd")
    r = torchrun(["-m", "kdlab", "train", str(cfg), "data.batch_size=33"], timeout=120)
    assert r.returncode != 0
    # each rank prints the same line (the two may interleave on the shared stderr pipe)
    assert ("kdlab: error: data.batch_size=33 does not divide among 2 processes (the global batch is split evenly); "
            "use a multiple of 2, e.g. data.batch_size=32") in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr.split("kdlab: error:")[0]
    assert not (tmp_path / "runs" / "odd").exists()  # refused before anything was written


def test_a_rank_killed_under_torchrun_restarts_resumes_to_the_same_weights(tmp_path):
    long = {"schedule": {"epochs": 4, "milestones": [3]}, "train": {"checkpoint_every_steps": 1}}
    one = write_cfg(tmp_path / "one.yaml", tmp_path / "runs", "whole", **long)
    whole = torchrun(["-m", "kdlab", "train", str(one)])  # the uninterrupted 2-process run
    assert whole.returncode == 0, whole.stderr[-3000:]
    cfg = write_cfg(tmp_path / "two.yaml", tmp_path / "runs", "killed", **long)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
           "-m", "kdlab", "train", str(cfg), "--overwrite"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    last = tmp_path / "runs" / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2, children
    os.kill(int(children[-1]), signal.SIGKILL)  # one worker dies without a word
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    log = (tmp_path / "runs" / "killed" / "metrics.jsonl").read_text()
    assert "resume: continuing from" in log  # the restarted workers continued from last.pt
    assert max_diff(last_state(tmp_path / "runs" / "killed"), last_state(tmp_path / "runs" / "whole")) < 1e-6
