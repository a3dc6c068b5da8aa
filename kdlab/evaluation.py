"""``kdlab eval``: score a finished run (its best checkpoint) or a bare checkpoint file on a split.

A kdlab checkpoint (a run folder, or its ``best.pt`` / ``last.pt`` alone) is rebuilt the way it was
trained: its own config (the run's ``config.yaml``, or the one embedded in the file) names the
models and the method, the method is rebuilt around an untrained teacher and the saved method
state is loaded, so that models which change the inference path (SimKD's projector + reused
teacher classifier) evaluate exactly as saved, without the teacher's checkpoint file.
A foreign checkpoint (``state_dict``/``model`` keys, ``module.`` prefixes) is loaded into
``student.name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config import Config, load_config
from kdlab.data.build import DataBundle
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.device import build_policy
from kdlab.engine.evaluators import get_evaluator
from kdlab.errors import KdlabError
from kdlab.experiment import build_model, check_config, load_data, make_loader, method_params
from kdlab.methods import create_distiller, method_class


def _kdlab_state(path: Path) -> dict[str, Any] | None:
    """The checkpoint's dict if it is one of kdlab's (method state + config), else None."""
    try:
        obj = load_checkpoint_file(path)
    except KdlabError:  # e.g. a foreign file that needs full unpickling: the model loader reports
        return None
    if isinstance(obj, dict) and isinstance(obj.get("distiller"), dict) and isinstance(obj.get("config"), dict):
        return obj
    return None


def _rebuild(cfg: Config, data: DataBundle, state: dict[str, Any]) -> nn.Module:
    """The inference model of a kdlab run: method rebuilt on untrained models, then its state loaded."""
    check_config(cfg, weights=False)
    cls = method_class(cfg.method.name)
    student = build_model(cfg.student.name, data.num_classes, cfg.student.kwargs, None)
    teacher = (build_model(cfg.teacher.name, data.num_classes, cfg.teacher.kwargs, None)
               if cls.uses_teacher else None)
    distiller = create_distiller(cfg.method.name, student=student, teacher=teacher, **method_params(cfg, data))
    distiller.load_state_dict_without_teacher(state["distiller"])
    return distiller.inference_model()


def evaluate_checkpoint(target: str | Path, *, split: str = "test", overrides: list[str] | None = None) -> dict:
    """Evaluate a run folder (config.yaml + checkpoints/best.pt) or a checkpoint file.

    A kdlab checkpoint file carries its config; overrides change it (e.g. ``data.root=...`` when
    the data moved). For a foreign file the overrides must name the model and data
    (``student.name=resnet56 data.dataset=cifar10-jpeg data.root=...``). Evaluation runs in fp32
    unless the overrides set ``train.amp``.
    """
    target = Path(target).expanduser()
    if target.is_dir():
        cfg_path = target / "config.yaml"
        ckpt_path = target / "checkpoints" / "best.pt"
        if not cfg_path.is_file() or not ckpt_path.is_file():
            raise KdlabError(f"{target} is not a finished kdlab run (needs config.yaml and checkpoints/best.pt)")
        cfg = load_config(cfg_path, overrides)
        state = load_checkpoint_file(ckpt_path)
    elif target.is_file():
        ckpt_path = target
        state = _kdlab_state(target)
        cfg = load_config(None, overrides, extra=state["config"] if state else None)
        if not cfg.student.name:
            raise KdlabError("evaluating a checkpoint file needs student.name=<model> (and data.dataset=...)")
    else:
        raise KdlabError(f"{target} is neither a run folder nor a checkpoint file")

    if not any(o.strip().startswith("train.amp=") for o in overrides or ()):
        cfg.train.amp = "off"  # scores in fp32 (exact published numbers) unless train.amp is given
    data = load_data(cfg)
    if getattr(data, split) is None:
        raise KdlabError(f"split {split!r} is empty (data.val_fraction=0?)")
    if state is not None:
        model = _rebuild(cfg, data, state)
    else:
        model = build_model(cfg.student.name, data.num_classes, cfg.student.kwargs, str(ckpt_path))
    policy = build_policy(cfg.train, model)
    model.to(policy.device)
    if policy.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(cfg, data, split, policy, None)
    metrics = get_evaluator(getattr(data, "task", "classification"))(model, loader, policy)
    return {"checkpoint": str(ckpt_path), "dataset": cfg.data.dataset, "split": split, **metrics}
