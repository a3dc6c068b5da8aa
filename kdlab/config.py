"""Typed experiment config: YAML files (with ``base:`` inheritance) plus ``key.sub=value`` overrides.

A config is a few lines of YAML loaded into the :class:`Config` dataclasses. Unknown keys are
rejected with the nearest valid key; values are converted to the field's type or rejected with
one clear line. ``base: other.yaml`` (relative to the file) deep-merges another file underneath.
Shipped recipes (found by :mod:`kdlab.config_paths`, whose names this module re-exports) live in
``kdlab/configs/<dataset>/<method>/<pair>.yaml`` and can be named
without the directory or the ``.yaml`` suffix, e.g. ``cifar100/kd/resnet32x4_resnet8x4``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdlab.config_paths import CONFIG_DIR as CONFIG_DIR  # re-exported: kdlab.config keeps its public names
from kdlab.config_paths import list_configs as list_configs
from kdlab.config_paths import resolve_config_path
from kdlab.config_paths import resolve_shipped as resolve_shipped
from kdlab.config_paths import shipped_yaml as shipped_yaml
from kdlab.config_ranges import check_ranges
from kdlab.config_yaml import YamlAliasError, load_yaml, read_config_text, yaml_problem
from kdlab.errors import KdlabError, closest


@dataclass
class DataConfig:
    dataset: str = "cifar100"
    root: str = "data"
    val_fraction: float = 0.1
    split_seed: int = 0
    download: bool = False
    subset_size: int | None = None
    stratify: bool = True  # subset and val split keep class proportions; false: uniform draws (CompKD)
    limit_per_class: int | None = None
    image_size: int | None = None
    in_memory: bool | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    crop_padding: int = 4
    flip: bool = True
    num_workers: int = 2
    per_class: int = 0  # > 0: class-balanced training batches, this many images per class (CompKD's RKD: 5)
    cache_teacher: bool = False  # run the teacher once per training image before training (logit methods)
    cache_view: str = "augmented"  # teacher's view: augmented (one seeded crop+flip) | clean | replay (crops replayed)
    cache_views: int = 1  # replay: views cached (epoch e replays view (e-1) mod V); docs/teacher-cache.md
    cache_topk: int = 0  # replay: teacher logits kept per sample and view (0: all classes)
    cache_dtype: str = "float16"  # replay: storage of the kept log-probabilities: float16 | float32
    on_bad_file: str = "error"  # unreadable image file: error (one line naming it) | skip (warn, replace, count)
    decode: str = "cpu"  # file sets: cpu (PIL/libjpeg-turbo in workers) | gpu (nvJPEG batch decode on CUDA)
    reduced_decode: bool = True  # decode JPEGs at 1/2, 1/4, 1/8 size when the crop box allows it
    pin_memory: bool | None = None  # pinned host batches (None: on CUDA)
    prefetch: int = 1  # batches copied to the device ahead of use (file sets)
    persistent_workers: bool = True  # keep DataLoader workers between epochs (file sets)
    reuse_host_memory: bool = True  # file sets on a CPU: keep freed batch memory (glibc mallopt; data/host_memory.py)


@dataclass
class ModelConfig:
    name: str = ""
    checkpoint: str | None = None
    weights: str | None = None  # named pretrained weights (local cache): torchvision:<Enum.ENTRY> | timm:<tag>
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    name: str = "ce"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    name: str = "multistep"
    epochs: int = 240
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    deterministic: bool = False
    eval_every: int = 1
    checkpoint_every_steps: int = 0
    max_steps: int | None = None
    progress: bool = True
    tensorboard: bool = True
    test_at_end: bool = True
    teacher_mode: str = "auto"  # auto: the method's choice (eval, or train for OFD); eval | train forces it
    early_stop_patience: int | None = None  # evaluations without a val improvement that make a plateau
    plateau_lr_drops: int = 0  # on a plateau: reload the best weights and scale the LR, at most this often
    plateau_gamma: float = 0.1  # the LR factor of each plateau drop
    accumulate: int = 1  # micro-batches per process and step (the update equals the full batch's)
    sync_bn: bool = False  # multi-process runs: BatchNorm statistics over the global batch (student, connectors)
    ddp_find_unused: bool = False  # DDP: allow trainable parameters that a step does not use (slower)


WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class LogConfig:
    """Optional logging back-ends besides metrics.jsonl and TensorBoard (``train.tensorboard``).

    ``wandb: true`` sends the run's scalars, config and summary to Weights & Biases (``pip install
    'kdlab[wandb]'``); ``mode: offline`` writes them under the run folder without network (sync later
    with ``wandb sync``). Never on by default.
    """

    wandb: bool = False
    project: str = "kdlab"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "online"

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise KdlabError(f"log.mode={self.mode!r} is out of range: it must be one of {', '.join(WANDB_MODES)}")


@dataclass
class PublishedResult:
    """A number a paper or reference README reports for this recipe (what bench tables compare with).

    ``metric``: ``top1`` (classification, %) or a COCO metric (``AP``, ``AP50``...); ``source``: where
    it is printed (paper table, README); ``split``: the split it was measured on.
    """

    metric: str = "top1"
    value: float | None = None
    source: str = ""
    split: str = "test"
    note: str = ""


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    published: list[PublishedResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# loading


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise KdlabError(f"config {path} includes itself through 'base:'")
    text = read_config_text(path, seen[-1] if seen else None)
    try:
        raw = load_yaml(text) or {}
    except YamlAliasError as e:
        raise KdlabError(f"config {path}: {yaml_problem(e)}") from None
    except yaml.YAMLError as e:
        raise KdlabError(f"config {path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise KdlabError(f"config {path} must be a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    bases = base if isinstance(base, list) else [base]
    merged: dict[str, Any] = {}
    for b in bases:
        merged = deep_merge(merged, _read_yaml(path.parent / b, (*seen, path)))
    return deep_merge(merged, raw)


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` on top of ``a``; nested mappings merge, everything else is replaced."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise KdlabError(f"override {item!r} must look like key.sub=value")
        key, _, text = item.partition("=")
        try:
            value = load_yaml(text) if text != "" else None
        except YamlAliasError as e:
            raise KdlabError(f"override {item!r}: {e.problem}") from None
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise KdlabError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return out


def load_config(spec: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> Config:
    """Load a YAML config (file or shipped recipe name), apply ``extra`` then ``overrides``."""
    raw: dict[str, Any] = _read_yaml(resolve_config_path(spec)) if spec is not None else {}
    if extra:
        raw = deep_merge(raw, extra)
    for item in overrides or ():  # one at a time, in order: `a=null` then `a.b=1` rebuilds `a`
        raw = deep_merge(raw, parse_overrides([item]))
    cfg = from_dict(Config, raw)
    check_ranges(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# typed conversion


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and converting values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KdlabError(f"config key {prefix.rstrip('.') or '<root>'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            valid = [f"{prefix}{n}" for n in names]
            near = closest(f"{prefix}{key}", valid, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(valid)}"
            raise KdlabError(f"unknown config key {prefix + str(key)!r}; {hint}")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except KdlabError as e:
                errors.append(str(e))
        raise KdlabError(errors[0] if errors else f"config key {key} has a bad value {value!r}")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise KdlabError(f"config key {key} must be a list, got {value!r}")
        return [_convert(v, args[0] if args else Any, key) for v in value]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise KdlabError(f"config key {key} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise KdlabError(f"config key {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise KdlabError(f"config key {key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise KdlabError(f"config key {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            return "on" if value else "off"
        raise KdlabError(f"config key {key} must be a string, got {value!r}")
    return value
