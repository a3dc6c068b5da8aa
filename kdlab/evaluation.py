"""``kdlab eval``: score a finished run (its best checkpoint) or a bare checkpoint file on a split.

A kdlab checkpoint (a run folder, or its ``best.pt`` / ``last.pt`` alone) is rebuilt the way it was
trained: its own config (the run's ``config.yaml``, or the one embedded in the file) names the
models and the method, the method is rebuilt around an untrained teacher and the saved method
state is loaded, so that models which change the inference path (SimKD's projector + reused
teacher classifier) evaluate exactly as saved, without the teacher's checkpoint file.
A foreign checkpoint (``state_dict``/``model`` keys, ``module.`` prefixes) is loaded into
``student.name``. A ``.safetensors`` file written by ``kdlab export`` carries the run's config and
data facts (classes, image size, training-set size) in its metadata and the inference model's
weights as tensors; it is rebuilt the same way, without the data.

:func:`load_target` and :class:`LoadedRun` are what the workflow tools (report, export) use to
open any of these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from kdlab.config import Config, load_config, load_yaml
from kdlab.data.build import DataBundle
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.device import build_policy
from kdlab.engine.evaluators import get_evaluator
from kdlab.errors import KdlabError
from kdlab.experiment import build_model, check_config, load_data, make_loader, method_params
from kdlab.methods import create_distiller, method_class
from kdlab.methods.base import Distiller

SAFETENSORS_SUFFIX = ".safetensors"


def kdlab_state(path: Path) -> dict[str, Any] | None:
    """The checkpoint's dict if it is one of kdlab's (method state + config), else None."""
    try:
        obj = load_checkpoint_file(path)
    except KdlabError:  # e.g. a foreign file that needs full unpickling: the model loader reports
        return None
    if isinstance(obj, dict) and isinstance(obj.get("distiller"), dict) and isinstance(obj.get("config"), dict):
        return obj
    return None


def data_facts(data: DataBundle) -> dict[str, int]:
    """What a method's adapters are sized by (see :func:`kdlab.experiment.method_params`)."""
    return {"num_classes": data.num_classes, "image_size": data.image_size[0], "num_data": len(data.train)}


def build_distiller(cfg: Config, facts: dict[str, int]) -> Distiller:
    """The run's method on untrained models (no checkpoint read), sized by ``facts``."""
    check_config(cfg, weights=False)
    cls = method_class(cfg.method.name)
    student = build_model(cfg.student.name, facts["num_classes"], cfg.student.kwargs, None)
    teacher = (build_model(cfg.teacher.name, facts["num_classes"], cfg.teacher.kwargs, None)
               if cls.uses_teacher else None)
    fake = SimpleNamespace(image_size=(facts["image_size"],) * 2, train=range(facts["num_data"]),
                           num_classes=facts["num_classes"])
    return create_distiller(cfg.method.name, student=student, teacher=teacher, **method_params(cfg, fake))


def rebuild(cfg: Config, facts: dict[str, int], state: dict[str, Any]) -> Distiller:
    """A kdlab run's distiller (teacher untrained), its saved state loaded."""
    distiller = build_distiller(cfg, facts)
    distiller.load_state_dict_without_teacher(state["distiller"])
    return distiller


def read_safetensors(path: Path, overrides: list[str] | None = None) -> tuple[Config, nn.Module]:
    """A ``kdlab export --format safetensors`` file: its config (metadata) and inference model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise KdlabError(f"{path} is not a readable safetensors file ({e})") from None
    if "kdlab_config" not in meta or "kdlab_facts" not in meta:
        raise KdlabError(f"{path} carries no kdlab config; export it with `kdlab export RUN --format safetensors`")
    cfg = load_config(None, overrides, extra=load_yaml(meta["kdlab_config"]))
    model = build_distiller(cfg, json.loads(meta["kdlab_facts"])).inference_model()
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise KdlabError(f"{path} does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return cfg, model


@dataclass
class LoadedRun:
    """What a run folder or a checkpoint file holds: its config and the saved weights.

    ``state`` is a kdlab checkpoint dict (or None for a foreign file / a safetensors export);
    ``model`` is set for a safetensors export (already loaded).
    """

    cfg: Config
    checkpoint: Path
    state: dict[str, Any] | None = None
    model: nn.Module | None = None

    def inference_model(self, data: DataBundle) -> nn.Module:
        """The evaluated network, its weights loaded (the data sizes a method's adapters)."""
        if self.model is not None:
            return self.model
        if self.state is not None:
            return rebuild(self.cfg, data_facts(data), self.state).inference_model()
        return build_model(self.cfg.student.name, data.num_classes, self.cfg.student.kwargs, str(self.checkpoint))


def load_target(target: str | Path, overrides: list[str] | None = None) -> LoadedRun:
    """Open a run folder, a kdlab checkpoint, a safetensors export or a foreign checkpoint file."""
    target = Path(target).expanduser()
    if target.is_dir():
        cfg_path = target / "config.yaml"
        ckpt_path = target / "checkpoints" / "best.pt"
        if not cfg_path.is_file() or not ckpt_path.is_file():
            raise KdlabError(f"{target} is not a finished kdlab run (needs config.yaml and checkpoints/best.pt)")
        return LoadedRun(load_config(cfg_path, overrides), ckpt_path, load_checkpoint_file(ckpt_path))
    if target.is_file() and target.suffix == SAFETENSORS_SUFFIX:
        cfg, model = read_safetensors(target, overrides)
        return LoadedRun(cfg, target, model=model)
    if target.is_file():
        state = kdlab_state(target)
        cfg = load_config(None, overrides, extra=state["config"] if state else None)
        if not cfg.student.name:
            raise KdlabError("evaluating a checkpoint file needs student.name=<model> (and data.dataset=...)")
        return LoadedRun(cfg, target, state)
    raise KdlabError(f"{target} is neither a run folder nor a checkpoint file")


def evaluate_checkpoint(target: str | Path, *, split: str = "test", overrides: list[str] | None = None) -> dict:
    """Evaluate a run folder (config.yaml + checkpoints/best.pt), a checkpoint file or a safetensors export.

    A kdlab checkpoint file carries its config; overrides change it (e.g. ``data.root=...`` when
    the data moved). For a foreign file the overrides must name the model and data
    (``student.name=resnet56 data.dataset=cifar10-jpeg data.root=...``). Evaluation runs in fp32
    unless the overrides set ``train.amp``.
    """
    run = load_target(target, overrides)
    cfg, ckpt_path = run.cfg, run.checkpoint
    if not any(o.strip().startswith("train.amp=") for o in overrides or ()):
        cfg.train.amp = "off"  # scores in fp32 (exact published numbers) unless train.amp is given
    data = load_data(cfg)
    if getattr(data, split) is None:
        raise KdlabError(f"split {split!r} is empty (data.val_fraction=0?)")
    model = run.inference_model(data)
    policy = build_policy(cfg.train, model)
    model.to(policy.device)
    if policy.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(cfg, data, split, policy, None)
    metrics = get_evaluator(getattr(data, "task", "classification"))(model, loader, policy)
    return {"checkpoint": str(ckpt_path), "dataset": cfg.data.dataset, "split": split, **metrics}
