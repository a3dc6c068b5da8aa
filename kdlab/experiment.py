"""Glue from a Config to a running experiment: dataset, models, distiller, loaders, trainer.

This is the only place that wires the layers together; the CLI and the demo call it. It checks
the cheap things first (model and method names, hyper-parameters, checkpoint paths) so a typo
fails in a second, before a dataset is decoded.

Two generic hooks, read from the method class, never from its name:

* ``loader_kind`` (default ``"images"``): a method that trains on something other than single
  images names a training loader of :data:`TRAIN_LOADERS` (``"tuples"``: CompKD's tuples) and
  gives its options in ``loader_options`` (the builder also takes ``shard=(rank, world)``);
  evaluation loaders are always the plain ones.
* ``data.cache_teacher``: the teacher runs before training, never during it, and the training
  loader attaches its cached logits to each batch (:mod:`kdlab.teacher_caching`: one view per
  image, or FKD-style replayed crops), saved in the run folder with a fingerprint so a rerun or a
  resume reads them.

Under torchrun (:mod:`kdlab.engine.distributed`) the process group is joined first, every loader
serves this rank's part of each global batch (``shard=(rank, world)``), rank 0 alone claims the
run folder and computes the teacher cache (the other ranks wait and read it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config import Config
from kdlab.data import DATASETS, DataBundle, build_dataset, build_loader
from kdlab.data.coco_catalog import build_detection_data, is_detection_dataset
from kdlab.data.coco_loader import DetectionLoader
from kdlab.data.tuples import build_tuple_loader
from kdlab.engine import (
    detection_eval,  # noqa: F401  (registers the "detection" evaluator)
    distributed,
    rank_io,
)
from kdlab.engine.device import DevicePolicy, build_policy, resolve_device
from kdlab.engine.run_folder import RunFolder, check_run_name
from kdlab.engine.trainer import Trainer
from kdlab.errors import KdlabError, closest
from kdlab.methods import create_distiller, method_class, method_defaults
from kdlab.methods.base import DATA_FACTS, Distiller
from kdlab.models import check_model_name, count_parameters, create_model, load_checkpoint
from kdlab.models.detection import check_detector_name, create_detector, is_detector
from kdlab.models.weights import load_named_weights, weights_file
from kdlab.teacher_caching import attach_teacher_cache, check_teacher_cache

TRAIN_LOADERS = {"tuples": build_tuple_loader}  # loader_kind -> builder of special training loaders


@dataclass
class Experiment:
    cfg: Config
    data: DataBundle
    distiller: Distiller
    train_loader: Any
    val_loader: Any
    test_loader: Any
    run_dir: Path
    folder: RunFolder | None = None


def check_config(cfg: Config, *, weights: bool = True) -> None:
    """Fail fast on names and paths, before any data is loaded.

    ``weights=False`` (evaluating a finished run) skips the checks of the student's and teacher's
    checkpoint files: the run's own checkpoint holds every weight the evaluated model needs.
    """
    check_run_name(cfg.name)
    cls = method_class(cfg.method.name)
    valid = method_defaults(cfg.method.name)
    for key in cfg.method.params:
        if key not in valid:
            near = closest(key, valid, n=1)
            hint = f"did you mean 'method.params.{near[0]}'?" if near else f"valid: {', '.join(valid)}"
            raise KdlabError(f"method {cfg.method.name!r} has no hyper-parameter {key!r}; {hint}")
    if not cfg.student.name:
        raise KdlabError("student.name is not set; e.g. student.name=resnet8x4 (see `kdlab list models`)")
    DATASETS.get(cfg.data.dataset)
    task = "detection" if is_detection_dataset(cfg.data.dataset) else "classification"
    if getattr(cls, "task", "classification") != task:
        raise KdlabError(f"method {cfg.method.name!r} is a {getattr(cls, 'task', 'classification')} method but "
                         f"{cfg.data.dataset!r} is a {task} dataset; see `kdlab list methods`")
    if task == "detection" and cfg.data.cache_teacher:
        raise KdlabError("data.cache_teacher caches classification logits; set data.cache_teacher=false "
                         "for detection")
    names = [cfg.student.name] + ([cfg.teacher.name] if cls.uses_teacher and cfg.teacher.name else [])
    for name in names:
        check_detector_name(name) if task == "detection" else check_model_name(name)
    for role, mc in (("student", cfg.student), ("teacher", cfg.teacher)):
        if weights and mc.checkpoint and not Path(mc.checkpoint).expanduser().is_file():
            raise KdlabError(f"{role}.checkpoint {mc.checkpoint!r} does not exist; train that model first "
                             f"(see `kdlab list configs`, e.g. cifar100/ce/<model>) or point {role}.checkpoint "
                             "at a checkpoint file")
        if weights and mc.weights and (role == "student" or cls.uses_teacher):
            weights_file(mc.weights)  # the named file is in the local cache, or one line saying where to put it
    kind = getattr(cls, "loader_kind", "images")
    if kind != "images" and kind not in TRAIN_LOADERS:
        raise KdlabError(f"method {cfg.method.name!r} asks for training loader {kind!r}; known: "
                         f"images, {', '.join(TRAIN_LOADERS)}")
    if cfg.data.cache_teacher:
        check_teacher_cache(cfg, cls)
    elif cfg.data.cache_view == "replay":
        raise KdlabError("data.cache_view=replay is a teacher cache: set data.cache_teacher=true with it")
    if cls.uses_teacher:
        if not cfg.teacher.name:
            raise KdlabError(f"method {cfg.method.name!r} needs a teacher: set teacher.name and teacher.checkpoint")
        if weights and not cfg.teacher.checkpoint and not cfg.teacher.weights:
            raise KdlabError(
                f"teacher.checkpoint is not set: method {cfg.method.name!r} would distill from an untrained "
                "teacher; train one first (`kdlab train <teacher config>`) and point teacher.checkpoint at "
                "its checkpoints/best.pt (or name pretrained weights: teacher.weights=torchvision:<Enum.ENTRY>)"
            )


def build_model(name: str, num_classes: int, kwargs: dict, checkpoint: str | None,
                weights: str | None = None) -> nn.Module:
    """Build a model; load named pretrained ``weights`` (local cache only), then ``checkpoint`` over them."""
    if is_detector(name):  # named weights: a torchvision detection entry, e.g. FasterRCNN_ResNet50_FPN_Weights.COCO_V1
        model = create_detector(name, num_classes, None, **kwargs)
        if weights:
            load_named_weights(model, weights)
        if checkpoint:
            load_checkpoint(model, Path(checkpoint).expanduser())
        return model
    model = create_model(name, num_classes=num_classes, **kwargs)
    if weights:
        load_named_weights(model, weights)
    if checkpoint:
        load_checkpoint(model, Path(checkpoint).expanduser())
    return model


def load_data(cfg: Config) -> DataBundle:
    d = cfg.data
    if is_detection_dataset(d.dataset):
        return build_detection_data(d.dataset, d.root, val_fraction=d.val_fraction, split_seed=d.split_seed,
                                    limit_per_class=d.limit_per_class, image_size=d.image_size, flip=d.flip)
    return build_dataset(d.dataset, d.root, val_fraction=d.val_fraction, split_seed=d.split_seed,
                         download=d.download, subset_size=d.subset_size, limit_per_class=d.limit_per_class,
                         image_size=d.image_size, in_memory=d.in_memory, stratify=d.stratify,
                         on_bad_file=d.on_bad_file, reduced_decode=d.reduced_decode)


def make_loader(cfg: Config, data: DataBundle, split: str, policy: DevicePolicy, distiller: Distiller | None) -> Any:
    images = getattr(data, split)
    if images is None:
        return None
    train = split == "train"
    d = cfg.data
    asks = train and distiller is not None
    if getattr(data, "task", "classification") == "detection":
        return DetectionLoader(images, batch_size=d.batch_size if train else d.eval_batch_size, train=train,
                               seed=cfg.train.seed, num_workers=d.num_workers,
                               drop_last=bool(asks and distiller.drop_last),
                               shard=(distributed.rank(), distributed.world_size()))
    if asks and distiller.loader_kind != "images":
        return TRAIN_LOADERS[distiller.loader_kind](
            images, batch_size=d.batch_size, seed=cfg.train.seed, device=policy.device, mean=data.mean,
            std=data.std, crop_padding=d.crop_padding, flip=d.flip, channels_last=policy.channels_last,
            shard=(distributed.rank(), distributed.world_size()), **distiller.loader_options)
    return build_loader(
        images, batch_size=d.batch_size if train else d.eval_batch_size, train=train, device=policy.device,
        mean=data.mean, std=data.std, crop_padding=d.crop_padding, flip=d.flip,
        drop_last=bool(asks and distiller.drop_last),
        with_index=bool(asks and (distiller.needs_index or d.cache_teacher)),
        contrast_negatives=int(distiller.contrast_negatives) if asks else 0,
        contrast_mode=distiller.contrast_mode if asks else "exact",
        seed=cfg.train.seed, channels_last=policy.channels_last, num_workers=d.num_workers,
        per_class=d.per_class if train else 0, decode=d.decode, pin_memory=d.pin_memory,
        prefetch=d.prefetch, persistent_workers=d.persistent_workers, reuse_host_memory=d.reuse_host_memory,
        shard=(distributed.rank(), distributed.world_size()),
    )


def method_params(cfg: Config, data: DataBundle) -> dict[str, Any]:
    """The configured hyper-parameters, plus the data facts a method's signature asks for.

    A method that sizes adapters or memories declares ``image_size``, ``num_data`` (training-set
    size), ``num_classes`` or ``batch_size`` (``data.batch_size``; SemCKD's MLP width) as keyword
    arguments; unless the config sets them, they are filled from the data, so no method needs to
    know where its data comes from. ``compose`` declares them all and hands them to its parts. Under
    DDP / ``train.accumulate``, ``batch_size`` is the samples of one forward pass (global / (world x accumulate)).
    """
    params = dict(cfg.method.params)
    # batch_size: what one forward pass sees (SemCKD's batch-wide MLP), the global batch split over
    # processes and micro-batches (docs/distributed.md: batch-relational losses see that part)
    local = cfg.data.batch_size // (distributed.world_size() * cfg.train.accumulate)
    facts = {"image_size": data.image_size[0], "num_data": len(data.train), "num_classes": data.num_classes,
             "batch_size": max(local, 1)}
    accepted = method_defaults(cfg.method.name)
    for key in DATA_FACTS:
        if key in accepted and key not in params:
            params[key] = facts[key]
    return params


def build_experiment(cfg: Config, *, resume: bool | None = None, overwrite: bool = False) -> Experiment:
    """Data, models, distiller and loaders of ``cfg``.

    With ``resume`` given (True/False) the run folder is claimed first (lock, resume/overwrite rules;
    :class:`~kdlab.engine.run_folder.RunFolder`), before anything is written into it.
    """
    check_config(cfg)
    distributed.per_rank_batch(cfg.data.batch_size, distributed.launch_env().world, cfg.train.accumulate)
    distributed.init(resolve_device(cfg.train.device))
    folder = None
    if resume is not None:
        folder = RunFolder(Path(cfg.out_dir) / cfg.name)
        rank_io.claim(folder, resume, overwrite)
    data = load_data(cfg)
    torch.manual_seed(cfg.train.seed)  # connector/student init is reproducible per seed
    student = build_model(cfg.student.name, data.num_classes, cfg.student.kwargs, cfg.student.checkpoint,
                          cfg.student.weights)
    teacher = None
    if method_class(cfg.method.name).uses_teacher:
        teacher = build_model(cfg.teacher.name, data.num_classes, cfg.teacher.kwargs, cfg.teacher.checkpoint,
                              cfg.teacher.weights)
    distiller = create_distiller(cfg.method.name, student=student, teacher=teacher,
                                 **method_params(cfg, data))
    if cfg.train.teacher_mode != "auto":
        distiller.set_teacher_mode(cfg.train.teacher_mode)
    policy = distributed.local_policy(build_policy(cfg.train, distiller.student))
    loaders = [make_loader(cfg, data, s, policy, distiller) for s in ("train", "val", "test")]
    run_dir = Path(cfg.out_dir) / cfg.name
    if cfg.data.cache_teacher:
        loaders[0] = attach_teacher_cache(cfg, data, distiller, teacher, policy, loaders[0], run_dir)
    return Experiment(cfg, data, distiller, *loaders, run_dir=run_dir, folder=folder)


def run_experiment(cfg: Config, *, resume: bool = False, overwrite: bool = False,
                   callbacks: list[Any] | None = None) -> dict:
    """Train (or distill) as the config says and return the run's summary.

    ``callbacks``: hooks called by the trainer (:mod:`kdlab.engine.callbacks`), e.g. a sweep's pruner.
    """
    exp = build_experiment(cfg, resume=resume, overwrite=overwrite)
    try:
        trainer = Trainer(cfg, exp.distiller, exp.train_loader, exp.val_loader, exp.test_loader,
                          run_dir=exp.run_dir, resume=resume, overwrite=overwrite,
                          callbacks=[*(callbacks or ()), _BadFilesInSummary(exp.data)],
                          task=getattr(exp.data, "task", "classification"), folder=exp.folder)
    except BaseException:
        exp.folder.unlock()
        raise
    summary = trainer.fit()
    summary.setdefault("run_dir", str(exp.run_dir))
    summary.setdefault("params", count_parameters(exp.distiller.inference_model()))
    summary.setdefault("extra_params", exp.distiller.extra_parameters())
    return summary


class _BadFilesInSummary:
    """Adds the data layer's count of unreadable image files (``data.on_bad_file``) to ``summary.json``."""

    def __init__(self, data: DataBundle) -> None:
        self.data = data

    def on_summary(self, summary: dict[str, Any]) -> None:
        summary["bad_files"] = self.data.bad_files.summary()
