"""``kdlab eval``: score a finished run (its best checkpoint) or a bare checkpoint file on a split."""

from __future__ import annotations

from pathlib import Path

import torch

from kdlab.config import load_config
from kdlab.engine.checkpoint import load_checkpoint_file
from kdlab.engine.device import build_policy
from kdlab.engine.metrics import evaluate
from kdlab.errors import KdlabError
from kdlab.experiment import build_model, check_config, load_data, make_loader, method_params
from kdlab.methods import create_distiller, method_class


def evaluate_checkpoint(target: str | Path, *, split: str = "test", overrides: list[str] | None = None) -> dict:
    """Evaluate a run folder (config.yaml + checkpoints/best.pt) or a checkpoint file.

    For a bare file, the overrides must name the model and data (``student.name=resnet56
    data.dataset=cifar10-jpeg data.root=...``); the file may be a kdlab checkpoint or a foreign
    one (``state_dict``/``model`` keys, ``module.`` prefixes).
    """
    target = Path(target).expanduser()
    if target.is_dir():
        cfg_path = target / "config.yaml"
        ckpt_path = target / "checkpoints" / "best.pt"
        if not cfg_path.is_file() or not ckpt_path.is_file():
            raise KdlabError(f"{target} is not a finished kdlab run (needs config.yaml and checkpoints/best.pt)")
        cfg = load_config(cfg_path, overrides)
    elif target.is_file():
        cfg = load_config(None, overrides)
        ckpt_path = target
        if not cfg.student.name:
            raise KdlabError("evaluating a checkpoint file needs student.name=<model> (and data.dataset=...)")
    else:
        raise KdlabError(f"{target} is neither a run folder nor a checkpoint file")

    data = load_data(cfg)
    if getattr(data, split) is None:
        raise KdlabError(f"split {split!r} is empty (data.val_fraction=0?)")
    if target.is_dir():
        check_config(cfg)
        cls = method_class(cfg.method.name)
        student = build_model(cfg.student.name, data.num_classes, cfg.student.kwargs, None)
        teacher = (build_model(cfg.teacher.name, data.num_classes, cfg.teacher.kwargs, cfg.teacher.checkpoint)
                   if cls.uses_teacher else None)
        distiller = create_distiller(cfg.method.name, student=student, teacher=teacher,
                                     **method_params(cfg, data))
        state = load_checkpoint_file(ckpt_path)
        distiller.load_state_dict_without_teacher(state["distiller"])
        model = distiller.inference_model()
    else:
        model = build_model(cfg.student.name, data.num_classes, cfg.student.kwargs, str(ckpt_path))
    policy = build_policy(cfg.train, model)
    model.to(policy.device)
    if policy.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(cfg, data, split, policy, None)
    metrics = evaluate(model, loader, policy=policy)
    return {"checkpoint": str(ckpt_path), "dataset": cfg.data.dataset, "split": split, **metrics}
