"""Issue 10 acceptance for ``kdlab bench`` on real Tiny-ImageNet images (../shared; skipped when absent).

A 2-method x 2-seed grid (``ce`` and teacher-free ``uskd`` on resnet8, 10 classes, 20 images a class
at 32 px, 3 epochs) runs as ``python -m kdlab bench`` in a subprocess, which is SIGKILLed once one cell
has finished and another holds ``last.pt``; the second invocation skips the finished cells (counted
in the bench's event log) and resumes the killed one. The table's means and sample standard
deviations are recomputed with numpy from the cells' summary.json, and ``--table`` rewrites the same
table without starting a run. The shipped ``tiny-imagenet-small`` grid (~15 min on 2 cores) is the
slow test at the end.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from shared_data import extracted
from test_methods_tiny_imagenet import ten_class_tree

from kdlab.workflow.bench_run import read_events

pytestmark = [pytest.mark.shared, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
SMALL = ["student.name=resnet8", "data.limit_per_class=20", "data.image_size=32", "data.crop_padding=4",
         "data.val_fraction=0.2", "data.batch_size=32", "data.in_memory=true", "data.num_workers=0",
         "train.device=cpu", "train.amp=off", "train.progress=false", "train.tensorboard=false",
         "schedule.name=constant", "schedule.epochs=3", "optim.lr=0.05"]


def bench(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdlab", "bench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def table_rows(bench_dir: Path) -> dict[str, dict]:
    return {r["method"]: r for r in csv.DictReader((bench_dir / "table.csv").read_text().splitlines())}


def test_small_real_grid_killed_resumed_and_tabulated(tmp_path):
    root = ten_class_tree(extracted("tiny-imagenet-200-sub100.tar.gz"), tmp_path / "t10")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "tiny", "configs": ["tiny-imagenet/ce/resnet8x4",
                                                                "tiny-imagenet/uskd/resnet8x4"],
                                    "seeds": [0, 1], "set": SMALL, "baseline": "ce"}))
    out = tmp_path / "out"
    bdir = out / "tiny"
    cells = ["tiny-imagenet_ce_resnet8x4-s0", "tiny-imagenet_ce_resnet8x4-s1",
             "tiny-imagenet_uskd_resnet8x4-s0", "tiny-imagenet_uskd_resnet8x4-s1"]
    args = [str(grid), f"data.root={root}", "--out", str(out)]

    # 1. kill the bench (and its training child) once a cell is done and another is mid-run
    p = bench(*args)
    deadline, killed_mid = time.time() + 300, None
    while time.time() < deadline and p.poll() is None:
        done = [c for c in cells if (bdir / c / "summary.json").is_file()]
        mid = [c for c in cells if (bdir / c / "checkpoints" / "last.pt").is_file() and c not in done]
        if done and mid:
            killed_mid = mid[0]
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    p.wait()
    assert killed_mid is not None, p.stdout.read()
    finished_before = [c for c in cells if (bdir / c / "summary.json").is_file()]
    stamps = {c: (bdir / c / "summary.json").stat().st_mtime_ns for c in finished_before}
    n_events = len(read_events(bdir))

    # 2. run again: finished cells are skipped, the killed one resumes, the rest start fresh
    p = bench(*args)
    text = p.communicate(timeout=600)[0]
    assert p.returncode == 0, text
    second = read_events(bdir)[n_events:]
    starts = {e["cell"]: e["action"] for e in second if e["event"] == "start"}
    assert not set(starts) & set(finished_before)
    assert {e["cell"] for e in second if e["event"] == "skip"} == set(finished_before)
    assert starts[killed_mid] == "resume"
    assert all(a == "fresh" for c, a in starts.items() if c != killed_mid)
    assert {c: (bdir / c / "summary.json").stat().st_mtime_ns for c in finished_before} == stamps
    assert "vs ce [95% CI]" in text  # the rich table was printed

    # 3. the table against numpy on the cells' summary.json
    rows = table_rows(bdir)
    for method in ("ce", "uskd"):
        sums = [json.loads((bdir / f"tiny-imagenet_{method}_resnet8x4-s{s}" / "summary.json").read_text())
                for s in (0, 1)]
        for metric in ("val_top1", "test_top1_at_best_val", "test_top1_last"):
            vals = np.array([x[metric] for x in sums])
            assert float(rows[method][f"{metric}_mean"]) == pytest.approx(vals.mean(), abs=1e-4)
            assert float(rows[method][f"{metric}_std"]) == pytest.approx(vals.std(ddof=1), abs=1e-4)
    ce_mean = float(rows["ce"]["test_top1_at_best_val_mean"])
    assert float(rows["uskd"]["delta"]) == pytest.approx(float(rows["uskd"]["test_top1_at_best_val_mean"]) - ce_mean,
                                                         abs=2e-4)
    assert (bdir / "table.png").stat().st_size > 1000

    # 4. --table re-renders the same files without training
    before = {f: (bdir / f).read_text() for f in ("table.md", "table.csv")}
    for f in before:
        (bdir / f).unlink()
    p = bench(*args, "--table")
    assert p.wait(timeout=300) == 0
    assert {f: (bdir / f).read_text() for f in before} == before
    assert len(read_events(bdir)) == n_events + len(second)  # --table logged no start (nor skip)


def test_shipped_tiny_imagenet_grid_runs(tmp_path):
    """The shipped grid end to end on the 100-class subset (about 15 minutes on 2 CPU cores)."""
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    out = tmp_path / "out"
    p = bench("tiny-imagenet-small", f"data.root={root}", "--out", str(out), "--jobs", "2")
    text = p.communicate(timeout=3600)[0]
    assert p.returncode == 0, text
    rows = table_rows(out / "tiny-imagenet-small")
    assert set(rows) == {"ce", "uskd"} and all(r["n"] == "2" for r in rows.values())
    assert all(float(r["test_top1_at_best_val_mean"]) > 2.0 for r in rows.values())  # chance is 1%
