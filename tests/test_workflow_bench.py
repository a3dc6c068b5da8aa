"""kdlab bench without training: grid expansion, the per-cell decision (skip / resume / fresh), the
scheduler's devices and thread split, the table's numbers recomputed independently from hand-written
run folders, and the one-line errors (empty grid, an invalid cell reported before anything trains)."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml
from scipy import stats as sp

from kdlab.cli import main
from kdlab.errors import KdlabError
from kdlab.workflow import bench_run
from kdlab.workflow.bench_grid import Cell, expand, load_grid
from kdlab.workflow.bench_render import csv_text, markdown
from kdlab.workflow.bench_run import cell_state, read_events, run_cells, thread_env, train_command
from kdlab.workflow.bench_table import build_table, collect
from kdlab.workflow.stats import sample_std, welch_interval

DIGITS = {"name": "d", "data": {"dataset": "digits", "val_fraction": 0.2, "image_size": 16, "num_workers": 0},
          "student": {"name": "resnet8"}, "method": {"name": "ce"},
          "schedule": {"name": "constant", "epochs": 1},
          "train": {"device": "cpu", "progress": False, "tensorboard": False}}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_sample_std_and_welch_interval_match_independent_formulas():
    a, b = [71.2, 72.0, 70.9], [70.1, 70.5, 69.2, 70.0]
    assert sample_std(a) == pytest.approx(statistics.stdev(a))
    assert sample_std([3.0]) is None
    diff, lo, hi = welch_interval(a, b)
    ci = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(statistics.mean(a) - statistics.mean(b))
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert welch_interval([1.0], b) is None


def test_grid_expands_configs_axes_and_seeds(tmp_path):
    write(tmp_path / "a.yaml", DIGITS)
    g = write(tmp_path / "g.yaml", {"name": "g", "configs": ["a.yaml", "cifar100/kd/resnet56_resnet20"],
                                     "seeds": [0, 3], "set": ["schedule.epochs=2"],
                                     "overrides": {"optim.lr": [0.1, 0.05]}})
    cells = expand(load_grid(g, ["data.root=/x"], out_dir=str(tmp_path / "out")))
    assert len(cells) == 2 * 2 * 2
    assert cells[0].name == "a-lr=0.1-s0" and cells[-1].name == "cifar100_kd_resnet56_resnet20-lr=0.05-s3"
    assert cells[1].overrides == ["schedule.epochs=2", "data.root=/x", "optim.lr=0.1", "train.seed=3"]
    assert cells[0].config == str(tmp_path / "a.yaml")
    assert cells[0].train_overrides(Path("B"))[-2:] == ["out_dir=B", "name=a-lr=0.1-s0"]


def test_cell_state_picks_skip_resume_or_fresh(tmp_path):
    cell = Cell("c-s0", "x.yaml", ["train.seed=0"], 0)
    run = tmp_path / "c-s0"
    assert cell_state(run) == "new" and train_command(cell, tmp_path, "new")[-1] == "--overwrite"
    write(run / "checkpoints" / "last.pt", "x")
    assert cell_state(run) == "killed" and train_command(cell, tmp_path, "killed")[-1] == "--resume"
    write(run / "summary.json", "{}")
    assert cell_state(run) == "finished"


def test_thread_split_and_device_per_cell():
    assert thread_env(2, None, cpus=16) == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}
    assert thread_env(1, None, cpus=16) == {}
    assert thread_env(2, "1", cpus=3)["CUDA_VISIBLE_DEVICES"] == "1"


FAKE_TRAIN = """import json, os, sys, pathlib
args = sys.argv[1:]
name = [a for a in args if a.startswith("name=")][0][5:]
out = [a for a in args if a.startswith("out_dir=")][0][8:]
run = pathlib.Path(out) / name
run.mkdir(parents=True, exist_ok=True)
(run / "seen.json").write_text(json.dumps({"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                           "omp": os.environ.get("OMP_NUM_THREADS"), "flag": args[-1]}))
(run / "summary.json").write_text("{}")
"""


def test_scheduler_skips_finished_resumes_killed_and_hands_out_devices(tmp_path, monkeypatch):
    script = write(tmp_path / "fake_train.py", FAKE_TRAIN)
    monkeypatch.setattr(bench_run, "train_command",
                        lambda cell, d, state: [sys.executable, str(script), *cell.train_overrides(d),
                                                "--resume" if state == "killed" else "--overwrite"])
    bench = tmp_path / "bench"
    cells = [Cell(f"c{i}", "x.yaml", [], i) for i in range(4)]
    write(bench / "c0" / "summary.json", "{}")                  # finished
    write(bench / "c1" / "checkpoints" / "last.pt", "x")        # killed mid-run
    out = run_cells(cells, bench, jobs=2, devices=["0", "1"], echo=lambda s: None)
    assert out == {"c0": "skipped", "c1": "done", "c2": "done", "c3": "done"}
    seen = {c: json.loads((bench / c / "seen.json").read_text()) for c in ("c1", "c2", "c3")}
    assert seen["c1"]["flag"] == "--resume" and seen["c2"]["flag"] == "--overwrite"
    assert {s["cuda"] for s in seen.values()} <= {"0", "1"}
    starts = [e["cell"] for e in read_events(bench) if e["event"] == "start"]
    assert sorted(starts) == ["c1", "c2", "c3"]
    assert run_cells(cells, bench, jobs=1, echo=lambda s: None) == dict.fromkeys(["c0", "c1", "c2", "c3"], "skipped")


def fake_run(bench: Path, name: str, method: str, student: str, seed: int, test_best: float, val: float,
             last: float, teacher: str = "resnet56", published: float | None = None) -> Cell:
    cfg = {"method": {"name": method}, "student": {"name": student}, "teacher": {"name": teacher},
           "data": {"dataset": "cifar100"},
           "published": [{"metric": "top1", "value": published, "source": "paper"}] if published else []}
    write(bench / name / "config.yaml", cfg)
    write(bench / name / "summary.json", json.dumps({"val_top1": val, "test_top1_at_best_val": test_best,
                                                      "test_top1_last": last}))
    return Cell(name, "x", [], seed)


def test_table_numbers_recomputed_independently(tmp_path):
    acc = {"ce": [69.1, 69.5, 68.8], "kd": [70.7, 70.9, 71.3], "dkd": [71.9, 71.5, 71.8]}
    cells = [fake_run(tmp_path, f"{m}-s{s}", m, "resnet20", s, v[s], v[s] + 1, v[s] - 0.3,
                      published={"kd": 70.66, "dkd": 71.97}.get(m)) for m, v in acc.items() for s in range(3)]
    cells.append(Cell("dkd-s9", "x", [], 9))  # never ran
    results, pending = collect(cells, tmp_path)
    assert pending == ["dkd-s9"]
    groups = {g.method: g for g in build_table(results, baseline="kd")}
    d = groups["dkd"].stats
    assert d["test_top1_at_best_val"][0] == pytest.approx(statistics.mean(acc["dkd"]))
    assert d["test_top1_at_best_val"][1] == pytest.approx(statistics.stdev(acc["dkd"]))
    assert d["val_top1"][0] == pytest.approx(statistics.mean(acc["dkd"]) + 1)
    assert d["test_top1_last"][1] == pytest.approx(statistics.stdev([v - 0.3 for v in acc["dkd"]]))
    assert d["student_ce"] == pytest.approx(statistics.mean(acc["ce"]))
    assert d["delta"] == pytest.approx(statistics.mean(acc["dkd"]) - statistics.mean(acc["ce"]))
    assert d["gap"] == pytest.approx(statistics.mean(acc["dkd"]) - 71.97)
    ci = sp.ttest_ind(acc["dkd"], acc["kd"], equal_var=False).confidence_interval(0.95)
    assert d["ci"][1:] == pytest.approx((ci.low, ci.high))
    assert groups["kd"].stats["ci"] is None and groups["ce"].stats["delta"] is None
    md = markdown(list(groups.values()), "kd")
    assert f"{statistics.mean(acc['dkd']):.2f} ± {statistics.stdev(acc['dkd']):.2f}" in md
    rows = {r["method"]: r for r in csv.DictReader(csv_text(list(groups.values()), "kd").splitlines())}
    assert float(rows["dkd"]["published"]) == 71.97 and rows["dkd"]["baseline"] == "kd"
    assert float(rows["dkd"]["ci_low"]) == pytest.approx(ci.low, abs=1e-4)


def test_empty_grid_is_one_line(tmp_path, capsys):
    g = write(tmp_path / "g.yaml", {"configs": [], "seeds": [0]})
    assert main(["bench", str(g)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no cells" in err
    g2 = write(tmp_path / "g2.yaml", {"configs": ["a.yaml"], "seeds": []})
    write(tmp_path / "a.yaml", DIGITS)
    assert main(["bench", str(g2)]) == 2 and "'seeds:' is empty" in capsys.readouterr().err


def test_invalid_cell_reported_before_anything_trains(tmp_path, capsys):
    write(tmp_path / "a.yaml", DIGITS)
    write(tmp_path / "b.yaml", {**DIGITS, "method": {"name": "kd", "params": {"temprature": 4}}})
    g = write(tmp_path / "g.yaml", {"name": "g", "configs": ["a.yaml", "b.yaml"], "seeds": [0, 1]})
    out = tmp_path / "out"
    assert main(["bench", str(g), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "grid cell b-s0" in err and "'temprature'" in err and "temperature" in err
    assert not out.exists()  # nothing trained, not even the good cells


def test_unknown_grid_key_and_table_without_runs(tmp_path, capsys):
    g = write(tmp_path / "g.yaml", {"configs": ["a.yaml"], "seed": [0]})
    with pytest.raises(KdlabError, match="unknown key 'seed'; did you mean 'seeds'"):
        load_grid(g)
    write(tmp_path / "a.yaml", DIGITS)
    g2 = write(tmp_path / "g2.yaml", {"configs": ["a.yaml"]})
    assert main(["bench", str(g2), "--table", "--out", str(tmp_path / "o")]) == 2
    assert "no finished cells" in capsys.readouterr().err


def test_shipped_grids_resolve_and_expand():
    dkd = load_grid("cifar100-dkd")
    pairs = {Path(c).stem for c in dkd.configs if "/dkd/" in c}
    assert len(pairs) == 11 and {Path(c).stem for c in dkd.configs if "/kd/" in c} == pairs
    assert len(expand(dkd)) == len(dkd.configs) * 5 and dkd.baseline == "kd"
    for name in ("cifar100-simkd", "cifar100-crd", "tiny-imagenet-small"):
        cells = expand(load_grid(name))
        assert cells and all(Path(c.config).is_file() for c in cells)
    crd = load_grid("cifar100-crd")
    assert len({Path(c).stem for c in crd.configs if "/crd/" in c}) == 13
    with pytest.raises(KdlabError, match="did you mean cifar100-dkd"):
        load_grid("cifar100-dk")


def test_student_baseline_found_across_axes_a_ce_run_cannot_take(tmp_path):
    cells = [fake_run(tmp_path, f"ce-s{s}", "ce", "resnet8", s, 60.0 + s, 61, 60) for s in range(2)]
    for t in (2, 4):
        c = fake_run(tmp_path, f"kd-T{t}", "kd", "resnet8", 0, 62.0 + t, 63, 62)
        c.axes = {"method.params.temperature": t}
        cells.append(c)
    groups = build_table(collect(cells, tmp_path)[0])
    kd = [g for g in groups if g.method == "kd"]
    assert [g.setting for g in kd] == ["method.params.temperature=2", "method.params.temperature=4"]
    assert [g.stats["delta"] for g in kd] == [pytest.approx(64.0 - 60.5), pytest.approx(66.0 - 60.5)]
