"""``kdlab report`` on real (short) digits runs: every figure is written, the HTML embeds its images
and references nothing outside, t-SNE has one point per sampled test image, the correlation figure's
matrix and the ECE equal independent computations on the logits, and bad targets are one line."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from test_workflow_report_runs import digits_runs, one_thread

from kdlab.cli import main
from kdlab.config import load_config
from kdlab.engine.device import DevicePolicy
from kdlab.evaluation import load_target
from kdlab.experiment import build_model, load_data, make_loader
from kdlab.workflow import report_figures
from kdlab.workflow.report import make_report

TSNE = 120


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return digits_runs(tmp_path_factory.mktemp("report_runs"))


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    """One report over the three runs plus SimKD's best.pt alone; the correlation matrices drawn are kept."""
    drawn = {}
    original = report_figures.correlation_figure

    def spy(diff, title, path, max_diff=3.0):
        drawn[path.name] = np.array(diff)
        return original(diff, title, path, max_diff)

    mp = pytest.MonkeyPatch()
    mp.setattr(report_figures, "correlation_figure", spy)
    out = tmp_path_factory.mktemp("report_out")
    try:
        with one_thread():
            result = make_report([runs["teacher"], runs["kd"], runs["simkd"],
                                  runs["simkd"] / "checkpoints" / "best.pt"], out, tsne_max=TSNE, seed=3)
    finally:
        mp.undo()
    return out, result, drawn


def test_every_figure_is_written(report):
    out, result, _ = report
    names = {p.name for p in out.iterdir()}
    assert {"curves.png", "report.html", "summary.md", "report.json"} <= names
    for run in ("teacher", "kd", "simkd", "simkd_best"):
        for kind in ("tsne", "confusion", "per_class", "reliability"):
            assert f"{kind}_{run}.png" in names
    assert {"correlation_kd.png", "correlation_simkd.png", "correlation_simkd_best.png"} <= names
    assert "correlation_teacher.png" not in names  # trained without a teacher
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("simkd/best: no metrics.jsonl" in n for n in result["notes"])  # a checkpoint alone: no curves
    assert json.loads((out / "report.json").read_text())["runs"][1]["run"] == "kd"


def test_html_embeds_every_image_and_references_nothing_outside(report):
    out, result, _ = report
    page = (out / "report.html").read_text()
    srcs = re.findall(r"""src=['"]([^'"]*)['"]""", page)
    pngs = sum(len(v) for v in result["figures"].values())
    assert len(srcs) == pngs > 10
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"""(href|url)\s*[=(]\s*['"]?(?!data:)""", page)  # no links, no CSS urls
    assert "<script" not in page and "<link" not in page
    md = (out / "summary.md").read_text()
    assert "| kd | kd | resnet8 | resnet14 |" in md and "![curves](curves.png)" in md


def test_tsne_has_one_point_per_sampled_test_image(report, runs):
    out, _, _ = report
    n_test = len(load_data(load_config(runs["kd"] / "config.yaml")).test)
    with (out / "tsne_kd.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == min(TSNE, n_test) == TSNE
    idx = [int(r["test_index"]) for r in rows]
    assert len(set(idx)) == len(idx) and all(0 <= i < n_test for i in idx)
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)


def _logits_by_hand(run_dir):
    """Student (best checkpoint) and teacher logits on the test split, and the labels, computed here."""
    loaded = load_target(run_dir)
    cfg = loaded.cfg
    data = load_data(cfg)
    student = loaded.inference_model(data).float().eval()
    teacher = build_model(cfg.teacher.name, data.num_classes, cfg.teacher.kwargs, cfg.teacher.checkpoint).eval()
    s, t, y = [], [], []
    with torch.no_grad():
        for batch in make_loader(cfg, data, "test", DevicePolicy(torch.device("cpu")), None):
            s.append(student(batch.image).numpy())
            t.append(teacher(batch.image).numpy())
            y.append(batch.target.numpy())
    return np.concatenate(s).astype(np.float64), np.concatenate(t).astype(np.float64), np.concatenate(y)


@pytest.mark.parametrize("run_name", ["kd", "simkd"])
def test_correlation_figure_and_numbers_match_an_independent_computation(report, runs, run_name):
    _, result, drawn = report
    s, t, y = _logits_by_hand(runs[run_name])
    c = s.shape[1]
    expected = np.zeros((c, c))
    for cls in range(c):  # mdistiller's notebook: per true class, the mean logit vector; |student - teacher|
        rows = y == cls
        expected[cls] = np.abs(s[rows].mean(0) - t[rows].mean(0))
        expected[cls, cls] = 0.0
    np.testing.assert_allclose(drawn[f"correlation_{run_name}.png"], expected, atol=1e-4)
    row = next(r for r in result["runs"] if r["run"] == run_name)
    assert row["corr_diff_mean"] == pytest.approx(expected.mean(), abs=1e-5)
    assert row["top1_agreement"] == pytest.approx(100 * np.mean(s.argmax(1) == t.argmax(1)))
    ps, pt = (np.exp(a - a.max(1, keepdims=True)) for a in (s, t))
    ps, pt = ps / ps.sum(1, keepdims=True), pt / pt.sum(1, keepdims=True)
    assert row["mean_kl"] == pytest.approx(np.mean(np.sum(pt * (np.log(pt) - np.log(ps)), 1)), rel=1e-4)
    conf, correct = ps.max(1), ps.argmax(1) == y
    ece = 0.0
    for b in range(15):  # equal-width bins (b/15, (b+1)/15], the first also holding 0
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf > lo) & (conf <= hi) if b else conf <= hi
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert row["ece"] == pytest.approx(100 * ece, abs=1e-3)
    assert row["test_top1"] == pytest.approx(100 * np.mean(correct))


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == f"kdlab: error: {tmp_path} is not a kdlab run folder (no config.yaml); pass run folders or " \
                  "checkpoint files\n"
    assert not (tmp_path / "r").exists()  # checked before anything is written
