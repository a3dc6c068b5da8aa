"""Issue 12, items 1-5: no file runs code, names stay in their folder, resume never loses a run, a run
killed while writing its checkpoint resumes to the uninterrupted result, one process per run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kdlab.cli import main
from kdlab.engine.checkpoint import load_checkpoint_file, save_checkpoint
from kdlab.engine.run_folder import RunFolder, _start_time

pytestmark = pytest.mark.usefixtures("no_fsync")


class Payload:
    """Unpickling this runs ``open(marker, "w")``: the attack a downloaded teacher file can carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_file(path: Path, marker: Path, wrap=lambda p: {"model": p}) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Payload(marker)), path)
    return path


def digits_cfg(tmp_path: Path, name: str = "r", **over) -> Path:
    cfg = {"name": name, "out_dir": str(tmp_path / "runs"),
           "data": {"dataset": "digits", "image_size": 8, "batch_size": 64, "val_fraction": 0.2, "crop_padding": 1},
           "student": {"name": "resnet8"}, "method": {"name": "ce"},
           "optim": {"lr": 0.05}, "schedule": {"name": "cosine", "epochs": 2},
           "train": {"progress": False, "tensorboard": False, "seed": 0, "amp": "off", "channels_last": "off"}}
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_line_error(capsys, args: list[str], match: str) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("kdlab: error: ") and "\n" not in err, err
    assert match in err, err
    return err


# ---- 1. no file runs code ------------------------------------------------------------------


def test_a_malicious_teacher_or_student_file_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = evil_file(tmp_path / "teacher.pth", marker)
    cfg = digits_cfg(tmp_path, "kd", method={"name": "kd"}, teacher={"name": "resnet8", "checkpoint": str(evil)})
    one_line_error(capsys, ["train", str(cfg)], "needs full unpickling (it references io.open)")
    cfg = digits_cfg(tmp_path, "init", student={"name": "resnet8", "checkpoint": str(evil)})
    one_line_error(capsys, ["train", str(cfg)], "kdlab convert-checkpoint")
    assert not marker.exists()


def test_a_malicious_resume_checkpoint_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = digits_cfg(tmp_path)
    evil_file(tmp_path / "runs" / "r" / "checkpoints" / "last.pt", marker, wrap=lambda p: {"format": 1, "x": p})
    one_line_error(capsys, ["train", str(cfg), "--resume"], "needs full unpickling")
    assert not marker.exists()


def test_kdlab_eval_of_a_malicious_file_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for wrap in (lambda p: {"model": p}, lambda p: {"distiller": {"x": p}, "config": {}}, lambda p: p):
        evil = evil_file(tmp_path / "e.pt", marker, wrap)
        one_line_error(capsys, ["eval", str(evil), "student.name=resnet8", "data.dataset=digits",
                                "data.image_size=8"], "needs full unpickling")
    assert not marker.exists()


def test_a_malicious_teacher_cache_is_recomputed_not_run(tmp_path, capsys):
    teacher = digits_cfg(tmp_path, "t", schedule={"epochs": 1})
    assert main(["train", str(teacher)]) == 0
    marker = tmp_path / "pwned"
    evil_file(tmp_path / "runs" / "kd" / "teacher_logits.pt", marker, wrap=lambda p: {"fingerprint": p})
    kd = digits_cfg(tmp_path, "kd", schedule={"epochs": 1}, method={"name": "kd"},
                    data={"cache_teacher": True},
                    teacher={"name": "resnet8", "checkpoint": str(tmp_path / "runs/t/checkpoints/best.pt")})
    # the folder holds only the planted cache file, no run files: a fresh start is allowed
    assert main(["train", str(kd)]) == 0
    capsys.readouterr()
    assert not marker.exists()
    assert isinstance(load_checkpoint_file(tmp_path / "runs" / "kd" / "teacher_logits.pt")["logits"], torch.Tensor)


def test_convert_checkpoint_needs_trust_and_gives_a_safe_file(tmp_path, capsys):
    model = nn.Linear(3, 2)
    src = tmp_path / "whole_module.pth"
    torch.save({"model": model, "best_acc": 71.5}, src)  # a pickled module: safe loading refuses it
    one_line_error(capsys, ["convert-checkpoint", str(src)], "add --trust only if you trust")
    assert main(["convert-checkpoint", str(src), "--trust"]) == 0
    out = Path(capsys.readouterr().out.strip())
    loaded = torch.load(out, weights_only=True)
    assert loaded["best_acc"] == 71.5
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())


# ---- 2. names stay in their folder ---------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "x" * 300, "run 1", "na$me"])
def test_bad_run_names_are_refused_before_anything_is_written(tmp_path, capsys, name):
    cfg = digits_cfg(tmp_path)
    one_line_error(capsys, ["train", str(cfg), f"name={name}"], "is not allowed")
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escape").exists()


def test_out_dir_below_a_file_or_unwritable_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    one_line_error(capsys, ["train", str(digits_cfg(tmp_path)), f"out_dir={tmp_path / 'afile' / 'runs'}"],
                   "cannot create the run folder")
    one_line_error(capsys, ["train", str(digits_cfg(tmp_path)), "out_dir=/proc/kdlab-runs"],
                   "set out_dir to a writable folder")


# ---- 3. resume and overwrite never lose a run ----------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_without_last_pt_refuses_and_changes_nothing(tmp_path, capsys):
    cfg = digits_cfg(tmp_path, schedule={"epochs": 1})
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "r"
    (run / "checkpoints" / "last.pt").unlink()
    before = _snapshot(run)
    one_line_error(capsys, ["train", str(cfg), "--resume"], "--resume: no checkpoint")
    assert _snapshot(run) == before
    # a fresh start over what is left is refused too, unless --overwrite
    one_line_error(capsys, ["train", str(cfg)], "already holds a run (checkpoints/best.pt, metrics.jsonl")
    assert _snapshot(run) == before
    assert main(["train", str(cfg), "--overwrite"]) == 0


# ---- 4. a kill during the checkpoint write ---------------------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    import kdlab.engine.checkpoint as ck
    real, seen = ck.torch.save, [0]
    def save(obj, f, *a, **k):
        if os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}")).startswith(".last.pt."):
            seen[0] += 1
            if seen[0] == int(os.environ["KILL_AT"]):
                f.write(b"PK half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, f, *a, **k)
    ck.torch.save = save
    from kdlab.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _records(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["event"] == "info":
            continue
        out.append({k: v for k, v in r.items() if k not in ("time", "img_per_s")})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [2, 3])  # end of epoch 1 (after its train and val records); mid-epoch 2
def test_kill_during_the_checkpoint_write_resumes_to_the_uninterrupted_run(tmp_path, kill_at):
    cfg = digits_cfg(tmp_path, schedule={"epochs": 3},
                     train={"deterministic": True, "checkpoint_every_steps": 25})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": str(kill_at)}
    cli = [sys.executable, "-m", "kdlab", "train", str(cfg)]
    subprocess.run([*cli, "--name", "ref"], check=True, env=env, capture_output=True, timeout=600)
    killed = subprocess.run([sys.executable, "-c", KILLER, "train", str(cfg), "--name", "cut"], env=env,
                            capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    run = tmp_path / "runs" / "cut"
    assert list((run / "checkpoints").glob(".last.pt.*.tmp")), "the kill left no half-written temp file"
    assert (run / ".lock").exists()  # the dead owner's lock: stale, taken over on resume
    subprocess.run([*cli, "--name", "cut", "--resume"], check=True, env=env, capture_output=True, timeout=600)
    assert not list((run / "checkpoints").glob(".*.tmp")) and not (run / ".lock").exists()
    ref = tmp_path / "runs" / "ref"
    a = load_checkpoint_file(ref / "checkpoints" / "last.pt")["distiller"]
    b = load_checkpoint_file(run / "checkpoints" / "last.pt")["distiller"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(run) == _records(ref)  # no duplicated train/val records
    best_ref = load_checkpoint_file(ref / "checkpoints" / "best.pt")
    best_cut = load_checkpoint_file(run / "checkpoints" / "best.pt")
    assert best_ref["step"] == best_cut["step"]
    assert all(torch.equal(best_ref["distiller"][k], best_cut["distiller"][k]) for k in best_ref["distiller"])


def test_a_best_written_after_the_last_checkpoint_is_dropped_on_resume(tmp_path):
    folder = RunFolder(tmp_path / "r")
    folder.claim(resume=False, overwrite=False)
    folder.metrics.write_text('{"event": "train", "step": 1}\n')
    folder.save_best({"step": 10, "w": torch.ones(1)})
    folder.save_last({"step": 10})  # records best step 10 and promotes it
    assert load_checkpoint_file(folder.best)["step"] == 10 and not folder.best_next.exists()
    with folder.metrics.open("a") as f:
        f.write('{"event": "train", "step": 2}\n{"event": "eval", "step": 2}\n')
    folder.save_best({"step": 20, "w": torch.zeros(1)})  # ... killed before the next last.pt
    folder.unlock()
    again = RunFolder(tmp_path / "r")
    again.claim(resume=True, overwrite=False)
    ck = again.load_last()
    assert ck["step"] == 10
    assert load_checkpoint_file(again.best)["step"] == 10 and not again.best_next.exists()
    assert again.metrics.read_text() == '{"event": "train", "step": 1}\n'


def test_a_best_named_by_last_pt_is_promoted_on_resume(tmp_path):
    folder = RunFolder(tmp_path / "r")
    folder.claim(resume=False, overwrite=False)
    folder.save_best({"step": 10, "w": torch.ones(1)})
    save_checkpoint({"step": 10, "best_file_step": 10, "metrics_bytes": 0}, folder.last)  # killed before rename
    folder.unlock()
    again = RunFolder(tmp_path / "r")
    again.claim(resume=True, overwrite=False)
    again.load_last()
    assert load_checkpoint_file(again.best)["step"] == 10 and not again.best_next.exists()


# ---- 5. one process per run folder -----------------------------------------------------------


def test_a_second_run_on_the_same_folder_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    cfg = digits_cfg(tmp_path, schedule={"epochs": 1})
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{owner.pid} {_start_time(owner.pid)}\n")
        one_line_error(capsys, ["train", str(cfg)], f"is in use by process {owner.pid}")
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        owner.kill()
        owner.wait()
    assert main(["train", str(cfg)]) == 0  # its owner is gone: the lock is stale
    assert not (run / ".lock").exists() and (run / "summary.json").exists()
