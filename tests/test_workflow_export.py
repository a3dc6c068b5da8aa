"""``kdlab export``: every format round-trips to the PyTorch model's logits on real test images
(SimKD's projector and reused teacher classifier included), ``kdlab eval`` of the safetensors file
equals eval of the run, and bad inputs are one line."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from test_workflow_report_runs import digits_runs

from kdlab.cli import main
from kdlab.config import load_yaml
from kdlab.engine.device import DevicePolicy
from kdlab.errors import KdlabError
from kdlab.evaluation import evaluate_checkpoint
from kdlab.experiment import load_data, make_loader
from kdlab.workflow.export import ATOL, export_run, exported_logits, load_inference


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return digits_runs(tmp_path_factory.mktemp("export_runs"))


def _test_images(cfg, n=64):
    data = load_data(cfg)
    batch = next(iter(make_loader(cfg, data, "test", DevicePolicy(torch.device("cpu")), None)))
    return batch.image[:n]


@pytest.mark.parametrize("run_name", ["simkd", "kd"])
def test_every_format_round_trips_to_the_same_logits(runs, tmp_path, run_name):
    run, model, _ = load_inference(runs[run_name])
    if run_name == "simkd":
        assert type(model).__name__ == "SimKDStudent"  # projector + teacher classifier, not the bare student
    x = _test_images(run.cfg)
    with torch.inference_mode():
        ref = model(x)
    for fmt, name in (("safetensors", "m.safetensors"), ("torchscript", "m.pt"), ("onnx", "m.onnx")):
        result = export_run(runs[run_name], fmt, tmp_path / name)
        assert result["max_abs_diff"] <= ATOL == 1e-4
        got = exported_logits(tmp_path / name, fmt, x)  # 64 real test images (the export checked random ones)
        assert got.shape == ref.shape
        torch.testing.assert_close(got.float(), ref, atol=ATOL, rtol=0)
        assert got.argmax(1).equal(ref.argmax(1))


def test_safetensors_carries_the_config_and_evaluates_like_the_run(runs, tmp_path, capsys):
    path = tmp_path / "simkd.safetensors"
    assert main(["export", str(runs["simkd"]), "--format", "safetensors", "--out", str(path)]) == 0
    assert "checked against the PyTorch model" in capsys.readouterr().out
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert load_yaml(meta["kdlab_config"])["method"]["name"] == "simkd"
    assert {"projector.0.weight", "classifier.weight"} <= keys
    from_file = evaluate_checkpoint(path)
    from_run = evaluate_checkpoint(runs["simkd"])
    assert (from_file["n"], from_file["top1"], from_file["top5"]) == (from_run["n"], from_run["top1"], from_run["top5"])
    assert from_file["loss"] == pytest.approx(from_run["loss"], rel=1e-6)


def test_default_output_path_is_inside_the_run(runs):
    result = export_run(runs["kd"], "torchscript")
    assert result["path"] == str(runs["kd"] / "export" / "model.pt")
    assert (runs["kd"] / "export" / "model.pt").is_file()
    assert not list((runs["kd"] / "export").glob("*.tmp"))


def test_bad_inputs_are_one_line(runs, tmp_path, capsys):
    with pytest.raises(KdlabError, match="unknown export format 'tflite'"):
        export_run(runs["kd"], "tflite")
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.startswith(f"kdlab: error: {tmp_path} is not a finished kdlab run")
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    assert main(["eval", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kdlab: error: {bogus} is not a readable safetensors file") and err.count("\n") == 1
