"""``kdlab export``: write a run's inference model as safetensors, TorchScript or ONNX, and check it.

The exported network is ``distiller.inference_model()`` of the run's best checkpoint (SimKD's
student + projector + reused teacher classifier included), rebuilt by :mod:`kdlab.evaluation`.
Every export is read back and run on a fixed random batch (seed 0, 4 images at the data's
resolution) and compared with the PyTorch model's logits: the largest absolute difference must be
at most :data:`ATOL` (1e-4, fp32) or the export fails with one line. ONNX files are checked with
onnxruntime (CPU).

A safetensors file holds the inference model's weights plus, in its metadata, the run's config
(``kdlab_config``, YAML) and the data facts that size a method's adapters (``kdlab_facts``, JSON),
so ``kdlab eval model.safetensors`` rebuilds and scores it without the run folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.errors import KdlabError
from kdlab.evaluation import data_facts, load_target, rebuild

FORMATS = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}
ATOL = 1e-4


def _facts_of(run: Any) -> dict[str, int]:
    """The run's data facts (classes, image size, training-set size), from its data opened without decoding."""
    from dataclasses import replace

    from kdlab.experiment import load_data

    cfg = run.cfg
    return data_facts(load_data(replace(cfg, data=replace(cfg.data, in_memory=False))))


def load_inference(target: str | Path, overrides: list[str] | None = None) -> tuple[Any, nn.Module, dict[str, int]]:
    """The loaded run, its inference model (eval mode, CPU, fp32) and its data facts."""
    run = load_target(target, overrides)
    if run.state is None:
        raise KdlabError(f"{target} is not a kdlab run or kdlab checkpoint; export needs one")
    facts = _facts_of(run)
    model = rebuild(run.cfg, facts, run.state).inference_model().float().eval()
    return run, model, facts


def _sample(facts: dict[str, int], n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, facts["image_size"], facts["image_size"], generator=g)


def _write_safetensors(model: nn.Module, path: Path, cfg: Any, facts: dict[str, int]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"kdlab_config": cfg.to_yaml(), "kdlab_facts": json.dumps(facts),
                                            "format": "pt"})


def _read_safetensors(path: Path) -> nn.Module:
    from kdlab.evaluation import read_safetensors

    return read_safetensors(path)[1].eval()


def _write_onnx(model: nn.Module, path: Path, x: torch.Tensor) -> None:
    """The TorchScript-based exporter (``dynamo=False``): seconds instead of the torch.export-based
    one's tens of seconds for these CNNs, same graph; its deprecation notice is silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    except ImportError as e:
        raise KdlabError(f"ONNX export needs the export extra: pip install 'kdlab[export]' ({e})") from None


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdlabError("checking an ONNX export needs onnxruntime: pip install 'kdlab[export]'") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


def exported_logits(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Logits of an exported file on ``x``, read back the way a user would."""
    with torch.inference_mode():
        if fmt == "safetensors":
            return _read_safetensors(path)(x)
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch.jit is deprecated upstream but still the portable format
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu").eval()(x)
    return _run_onnx(path, x)


def export_run(target: str | Path, fmt: str, out: str | Path | None = None,
               overrides: list[str] | None = None) -> dict[str, Any]:
    """Export ``target``'s inference model as ``fmt`` to ``out`` and check it; returns a report dict.

    ``out`` defaults to ``<run>/export/model<suffix>`` (or next to a checkpoint file).
    """
    if fmt not in FORMATS:
        raise KdlabError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run, model, facts = load_inference(target, overrides)
    target = Path(target).expanduser()
    if out is None:
        base = target / "export" if target.is_dir() else target.parent
        out = base / f"model{FORMATS[fmt]}"
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    x = _sample(facts)
    with torch.inference_mode():
        ref = model(x)
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "safetensors":
        _write_safetensors(model, tmp, run.cfg, facts)
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, x)
            traced.save(str(tmp))
    else:
        _write_onnx(model, tmp, x)
    try:
        got = exported_logits(tmp, fmt, x)
        diff = (got.float() - ref.float()).abs().max().item()
        if not diff <= ATOL:
            raise KdlabError(f"the {fmt} export differs from the PyTorch model by {diff:.3g} (> {ATOL:g}); "
                             "not written")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "format": fmt, "checkpoint": str(run.checkpoint), "max_abs_diff": diff,
            "tolerance": ATOL, "checked_on": f"{x.shape[0]} random images at {facts['image_size']}px (seed 0)",
            "params": sum(p.numel() for p in model.parameters())}
