"""Images per second of a detection distillation step against the student's plain training step.

(a) plain: the student Faster R-CNN's own training step (``det_plain``: forward, four losses,
    backward, SGD step);
(b) distill: the same step plus the frozen teacher's forward (FPN levels and its ROI head on the
    student's proposals) and the method's loss (default ``det_reviewkd_dkd``, the heaviest: both).

Detector heads: the CPU demo's small ones on a CPU (``--full-heads`` for torchvision's), torchvision's
on a GPU.
Random weights and random images with one or two random boxes (speed does not depend on them).
The two alternate for a few rounds so a drift of the machine's speed hits both; medians and the
ratio distill/plain (the cost of distilling, in plain steps) are printed. On a GPU the steps run
under bf16 autocast; ``--device cuda`` when one is there.

    python benchmarks/detection_speed.py [--pair fasterrcnn_resnet101_fpn,fasterrcnn_resnet18_fpn]
        [--method det_reviewkd_dkd] [--size 128] [--batch 4] [--steps 5] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import kdlab
from kdlab.data.coco import DetectionBatch
from kdlab.demo_detection import DETECTOR_KW
from kdlab.models.detection import create_detector


def make_batch(n: int, size: int, classes: int, g: torch.Generator) -> DetectionBatch:
    images, targets = [], []
    for _ in range(n):
        k = int(torch.randint(1, 3, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * size * 0.5
        wh = (torch.rand(k, 2, generator=g) * 0.4 + 0.1) * size
        images.append(torch.rand(3, size, size, generator=g))
        targets.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=size)], 1),
                        "labels": torch.randint(1, classes, (k,), generator=g)})
    return DetectionBatch(images, targets)


def time_steps(distiller, batches, device, amp: bool) -> float:
    opt = torch.optim.SGD(list(distiller.trainable_parameters()), lr=1e-3, momentum=0.9)
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    distiller.train()

    def step(b):
        with cast:
            _, terms = distiller(b.to(device))
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        opt.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", default="fasterrcnn_resnet101_fpn,fasterrcnn_resnet18_fpn")
    p.add_argument("--method", default="det_reviewkd_dkd")
    p.add_argument("--size", type=int, default=128, help="image side (also the detectors' min/max size)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--full-heads", action="store_true",
                   help="torchvision's RPN / ROI-head sizes (512 ROIs per image, 1024-wide box head) instead of "
                        "the CPU demo's small ones (default on a GPU)")
    a = p.parse_args()
    device = torch.device(a.device)
    amp = device.type == "cuda"
    kw = dict(min_size=a.size, max_size=a.size, anchor_sizes=tuple(a.size // 8 * 2**i for i in range(5)),
              norm="bn")
    if not (a.full_heads or device.type == "cuda"):
        kw = {**DETECTOR_KW, **kw}
    t_name, s_name = a.pair.split(",")
    torch.manual_seed(0)
    teacher = create_detector(t_name, a.classes, **kw).to(device)
    student = create_detector(s_name, a.classes, **kw).to(device)
    plain = kdlab.create_distiller("det_plain", student=student)
    distill = kdlab.create_distiller(a.method, student=student, teacher=teacher).to(device)
    g = torch.Generator().manual_seed(1)
    batches = [make_batch(a.batch, a.size, a.classes, g) for _ in range(a.steps)]
    rates: dict[str, list[float]] = {"plain": [], "distill": []}
    for _ in range(a.rounds):
        rates["plain"].append(time_steps(plain, batches, device, amp))
        rates["distill"].append(time_steps(distill, batches, device, amp))
    med = {k: statistics.median(v) for k, v in rates.items()}
    heads = "torchvision heads" if a.full_heads or device.type == "cuda" else "small CPU heads"
    print(f"{t_name} -> {s_name}, {a.method}, {a.size}px, batch {a.batch}, {device.type}"
          f"{' bf16' if amp else ''}, {heads}, {a.steps} steps x {a.rounds} rounds")
    print(f"plain student step   {med['plain']:8.1f} img/s")
    print(f"distillation step    {med['distill']:8.1f} img/s")
    print(f"distill / plain time {med['plain'] / med['distill']:8.2f}x")


if __name__ == "__main__":
    main()
