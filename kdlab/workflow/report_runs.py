"""``kdlab report``, part 1: open what runs left behind and compute their test-split outputs.

A target is a run folder (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/best.pt``),
a kdlab checkpoint file alone (its embedded config; no curves) or a ``kdlab export`` safetensors file.
:func:`open_run` reads the files; :func:`collect_outputs` runs the inference model (best checkpoint) over
the test split in fp32 and keeps, per image, the logits, the penultimate features (the input of the
classifier: the ``pooled`` tap, or the input of the model's last ``nn.Linear`` when the network
declares no taps, e.g. SimKD's deployed student) and the label; when the run distilled from a teacher
whose checkpoint file still exists, the teacher's logits on the same images too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.config import Config
from kdlab.engine.device import DevicePolicy
from kdlab.errors import KdlabError
from kdlab.evaluation import LoadedRun, load_target
from kdlab.experiment import build_model, load_data, make_loader
from kdlab.features import get_taps
from kdlab.methods import method_class

# fields of a metrics.jsonl "train" record that are not loss terms
NOT_TERMS = {"event", "time", "epoch", "step", "lr", "loss", "top1", "img_per_s", "batches", "of"}


@dataclass
class RunInfo:
    """One report target: its label, config, loaded weights and logged records."""

    label: str
    path: Path
    loaded: LoadedRun
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    @property
    def cfg(self) -> Config:
        return self.loaded.cfg


@dataclass
class Outputs:
    """Test-split outputs of one run (CPU tensors, in loader order)."""

    logits: Tensor
    features: Tensor
    labels: Tensor
    classes: list[str]
    teacher_logits: Tensor | None = None
    teacher_note: str = ""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a torn last line, from a killed run, is skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def open_run(target: str | Path, overrides: list[str] | None = None, label: str | None = None) -> RunInfo:
    """Open one report target (see the module docstring); a folder that is not a run is one line."""
    path = Path(target).expanduser()
    if path.is_dir() and not (path / "config.yaml").is_file():
        raise KdlabError(f"{path} is not a kdlab run folder (no config.yaml); pass run folders or checkpoint files")
    loaded = load_target(path, overrides)
    info = RunInfo(label or (path.name if path.is_dir() else f"{path.parent.parent.name}/{path.stem}"), path, loaded)
    if path.is_dir():
        if (path / "metrics.jsonl").is_file():
            info.records = read_metrics(path / "metrics.jsonl")
        if (path / "summary.json").is_file():
            info.summary = json.loads((path / "summary.json").read_text())
    return info


def unique_labels(labels: list[str]) -> list[str]:
    """Labels made unique by a ``#2``, ``#3``... suffix on repeats."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}#{seen[lab]}")
    return out


def _classifier_input_module(model: nn.Module) -> nn.Module:
    try:
        return model.get_submodule(get_taps(model).classifier)
    except KdlabError:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise KdlabError(f"{type(model).__name__} has no classifier layer to take features from") from None
        return linears[-1]


def _teacher(run: RunInfo, num_classes: int) -> tuple[nn.Module | None, str]:
    cfg = run.cfg
    if not method_class(cfg.method.name).uses_teacher or not cfg.teacher.name:
        return None, "no teacher (the method trains without one)"
    ck = cfg.teacher.checkpoint
    if not ck or not Path(ck).expanduser().is_file():
        return None, f"teacher checkpoint {ck!r} not found: teacher comparisons skipped"
    return build_model(cfg.teacher.name, num_classes, cfg.teacher.kwargs, ck), ""


def collect_outputs(run: RunInfo, device: str = "cpu") -> Outputs:
    """Logits, penultimate features and labels of the run's inference model on the test split."""
    cfg = run.cfg
    data = load_data(cfg)
    if data.test is None:
        raise KdlabError(f"{run.label}: the dataset has no test split")
    model = run.loaded.inference_model(data).float().eval().to(device)
    teacher, note = _teacher(run, data.num_classes)
    if teacher is not None:
        teacher = teacher.float().eval().to(device)
    policy = DevicePolicy(torch.device(device))
    loader = make_loader(cfg, data, "test", policy, None)
    grabbed: list[Tensor] = []
    hook = _classifier_input_module(model).register_forward_pre_hook(
        lambda _m, args: grabbed.append(torch.flatten(args[0], 1).detach().cpu()))
    logits, labels, t_logits = [], [], []
    try:
        with torch.inference_mode():
            for item in loader:
                image = (item.image if hasattr(item, "image") else item[0]).to(device)
                target = item.target if hasattr(item, "target") else item[1]
                logits.append(model(image).float().cpu())
                labels.append(target.cpu())
                if teacher is not None:
                    t_logits.append(teacher(image).float().cpu())
    finally:
        hook.remove()
    return Outputs(torch.cat(logits), torch.cat(grabbed), torch.cat(labels), list(data.classes),
                   torch.cat(t_logits) if teacher is not None else None, note)
