"""``kdlab cost``: what a config costs — parameters, FLOPs, throughput and peak memory.

Two functions, also used by the bench tables' cost columns:

* :func:`model_cost(cfg) <model_cost>` -> ``dict``: parameters and MACs per image of the student
  (``student_params``, ``student_macs``: the deployed inference model, so SimKD's projector and reused
  teacher classifier are included), the teacher (``teacher_params``, ``teacher_macs``; ``None``
  without a teacher), the method's extra trainable parameters (``extra_params``, connectors and
  projectors: ``distiller.extra_parameters()``) and the extra MACs of one training forward
  (``extra_macs``: the distiller's training forward minus the student's and the teacher's forwards,
  i.e. connectors, projectors and loss arithmetic), plus ``image_size``, ``num_classes``.
* :func:`speed(cfg, device) <speed>` -> ``dict``: ``train_img_per_s`` (forward + backward + SGD step
  of the whole distiller, teacher forward included), ``infer_img_per_s`` (the inference model under
  ``torch.inference_mode``), ``peak_memory_mb`` and ``peak_memory_kind`` (on CUDA
  ``torch.cuda.max_memory_allocated`` over the measurement; on CPU the process's peak resident set
  size from ``getrusage``, which includes everything the process ever held, so read it as an upper bound).

Counting: ``torch.utils.flop_counter.FlopCounterMode`` counts a multiply-add as 2 FLOPs; papers' "FLOPs"
columns (ResNet18 1.82G, resnet20 41M) are multiply-accumulates, so every number here is
**MACs = counted FLOPs / 2**, per image, at the data's resolution. Only convolutions, matmuls and
similar are counted (BatchNorm, activations and pooling are not), as in the papers' tables.

The data's resolution and class count come from a small table of known datasets (or
``data.image_size``), so no data is read; other datasets (``imagefolder``) are opened (file
lists only) to find them. Weights are random: cost does not depend on them, and no checkpoint is needed.
Speed uses random input tensors of the right shape (no data loading in the measurement).
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdlab.config import Config
from kdlab.data.batch import Batch
from kdlab.data.catalog import find_root
from kdlab.data.tiny_imagenet import SUBFOLDERS as TINY_SUBFOLDERS
from kdlab.data.tiny_imagenet import _has_layout
from kdlab.engine.device import resolve_device
from kdlab.evaluation import build_distiller
from kdlab.experiment import load_data

# dataset -> (classes, native image size, official training images)
KNOWN_DATA = {
    "cifar10": (10, 32, 50000), "cifar100": (100, 32, 50000), "cifar10-jpeg": (10, 32, 50000),
    "digits": (10, 8, 1437), "fashion-mnist": (10, 28, 60000), "tiny-imagenet": (200, 64, 100000),
    "imagenet": (1000, 224, 1281167), "places365": (365, 224, 1803460),
}


def data_facts(cfg: Config) -> dict[str, int]:
    """``num_classes``, ``image_size`` and ``num_data`` (training images after the val split)."""
    d = cfg.data
    if d.dataset == "tiny-imagenet":  # cut-down copies (../shared: 100 classes) count their wnids
        found = find_root(Path(d.root).expanduser(), _has_layout, TINY_SUBFOLDERS)
        classes = len((found / "wnids.txt").read_text().split()) if found else 200
        size, n = 64, classes * 500
    elif d.dataset in KNOWN_DATA:
        classes, size, n = KNOWN_DATA[d.dataset]
    else:  # open the data (file lists, no decoding) to learn its classes and size
        data = load_data(replace(cfg, data=replace(d, in_memory=False)))
        classes, size, n = data.num_classes, data.image_size[0], len(data.train) + len(data.val or ())
    if d.limit_per_class is not None:
        n = min(n, d.limit_per_class * classes)
    if d.subset_size is not None:
        n = min(n, d.subset_size)
    return {"num_classes": classes, "image_size": d.image_size or size, "num_data": int(n * (1 - d.val_fraction))}


def numel(model: nn.Module) -> int:
    """Every parameter of ``model``, frozen ones included (a shared tensor once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(fn, *args: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one call of ``fn`` (FlopCounterMode's FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2


def _batch(distiller: nn.Module, facts: dict[str, int], n: int, device: torch.device) -> Batch:
    size = facts["image_size"]
    images = torch.randn(n, 3, size, size, device=device)
    target = torch.randint(0, facts["num_classes"], (n,), device=device)
    batch = Batch(images, target, index=torch.arange(n, device=device))
    k = int(getattr(distiller, "contrast_negatives", 0))
    if k > 0:
        batch.extra["contrast_index"] = torch.randint(0, facts["num_data"], (n, k + 1), device=device)
    return batch


def model_cost(cfg: Config, batch: int = 2) -> dict[str, Any]:
    """Parameters and MACs per image of student, teacher and the method's extras (see module doc)."""
    facts = data_facts(cfg)
    distiller = build_distiller(cfg, facts)
    b = _batch(distiller, facts, batch, torch.device("cpu"))
    distiller.eval()
    with torch.no_grad():
        student = distiller.inference_model()
        s_macs = count_macs(distiller.student, b.image) // batch
        i_macs = count_macs(student, b.image) // batch
        t_macs = count_macs(distiller.teacher, b.image) // batch if distiller.teacher is not None else None
    distiller.train()
    try:
        train_macs = count_macs(distiller, b) // batch
        extra = max(0, train_macs - s_macs - (t_macs or 0))
    except Exception as e:  # noqa: BLE001 - a method whose forward needs a real loader: say so
        extra, train_macs = None, None
        print(f"kdlab cost: extra FLOPs not measured ({type(e).__name__}: {e})", file=sys.stderr)
    return {
        "image_size": facts["image_size"], "num_classes": facts["num_classes"],
        "student": cfg.student.name, "teacher": cfg.teacher.name if distiller.teacher is not None else None,
        "student_params": numel(student), "student_macs": i_macs,
        "teacher_params": numel(distiller.teacher) if distiller.teacher is not None else None,
        "teacher_macs": t_macs, "extra_params": distiller.extra_parameters(), "extra_macs": extra,
        "train_forward_macs": train_macs, "units": "MACs per image (FlopCounterMode FLOPs / 2)",
    }


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(cfg: Config, device: str | torch.device | None = None, *, steps: int = 10, warmup: int = 2,
          batch_size: int | None = None) -> dict[str, Any]:
    """Training and inference images per second on ``device`` and peak memory (see module doc)."""
    dev = torch.device(device) if device is not None else resolve_device(cfg.train.device)
    facts = data_facts(cfg)
    distiller = build_distiller(cfg, facts).to(dev)
    bs = batch_size or cfg.data.batch_size
    b = _batch(distiller, facts, bs, dev)
    opt = torch.optim.SGD(list(distiller.trainable_parameters()), lr=1e-3, momentum=0.9)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    distiller.train()

    def train_step() -> None:
        logits, terms = distiller(b)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        train_step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(dev)
    train_ips = steps * bs / (time.perf_counter() - t0)

    model = distiller.inference_model().eval()
    ebs = batch_size or cfg.data.eval_batch_size
    x = torch.randn(ebs, 3, facts["image_size"], facts["image_size"], device=dev)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        _sync(dev)
        infer_ips = steps * ebs / (time.perf_counter() - t0)
    if dev.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
    else:
        peak, kind = _peak_rss_mb(), "process peak RSS (getrusage; an upper bound)"
    return {"device": str(dev), "train_batch": bs, "eval_batch": ebs, "train_img_per_s": train_ips,
            "infer_img_per_s": infer_ips, "peak_memory_mb": peak, "peak_memory_kind": kind}


def _fmt(n: int | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n}{unit}"


def cost_table(cost: dict[str, Any], spd: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """Rows (label, value) for printing."""
    rows = [("resolution", f"{cost['image_size']}px, {cost['num_classes']} classes"),
            ("student", f"{cost['student']} (as deployed): {_fmt(cost['student_params'])} params, "
                        f"{_fmt(cost['student_macs'])} MACs"),
            ("teacher", f"{cost['teacher']}: {_fmt(cost['teacher_params'])} params, {_fmt(cost['teacher_macs'])} MACs"
             if cost["teacher"] else "none"),
            ("method extras", f"{_fmt(cost['extra_params'])} params, {_fmt(cost['extra_macs'])} MACs per "
                              "training image")]
    if spd:
        rows += [("train", f"{spd['train_img_per_s']:.1f} img/s (batch {spd['train_batch']}, {spd['device']})"),
                 ("inference", f"{spd['infer_img_per_s']:.1f} img/s (batch {spd['eval_batch']})"),
                 ("peak memory", f"{spd['peak_memory_mb']:.0f} MiB ({spd['peak_memory_kind']})")]
    rows.append(("units", "MACs = multiply-accumulates (FLOPs/2), as papers quote 'FLOPs'"))
    return rows


def bench_columns(config_path: str | Path) -> dict[str, str]:
    """The cost columns of a ``kdlab bench`` table for one cell's config: deployed student's params
    and MACs per image, the method's extra trainable params (no timing: tables stay reproducible)."""
    from kdlab.config import load_config

    c = model_cost(load_config(config_path))
    return {"params": _fmt(c["student_params"]), "MACs": _fmt(c["student_macs"]),
            "extra params": _fmt(c["extra_params"])}
