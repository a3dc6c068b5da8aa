"""Images per second of a KD training step with a replay teacher cache against the online teacher.

(a) online: the student's forward and backward plus the frozen teacher's forward on the batch;
(b) replay: the same step with the teacher's logits rebuilt from compressed cache rows (top-k
    float16 log-probabilities + log-sum-exp, :mod:`kdlab.data.replay_cache`), no teacher forward.

Random weights and images (speed does not depend on them). The two alternate for a few rounds so a
drift of the machine's speed hits both; medians and the ratio replay/online are printed.

    python benchmarks/replay_speed.py [--pair resnet32x4,resnet8x4] [--size 32] [--classes 100]
        [--batch 64] [--topk 10] [--steps 10] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import kdlab
from kdlab.data.batch import Batch
from kdlab.data.replay_cache import compress_logits, rebuild_logits
from kdlab.models import create_model


def time_steps(distiller, batches, rows, classes: int, device: torch.device) -> float:
    """Images/s of len(batches) optimizer steps; ``rows`` given: teacher logits from the cache."""
    opt = torch.optim.SGD(list(distiller.trainable_parameters()), lr=1e-3, momentum=0.9)
    distiller.train()
    start = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        extra = {} if rows is None else {"teacher_logits": rebuild_logits(rows[i], classes).to(device)}
        _, terms = distiller(Batch(x, y, extra=extra))
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(batches) * batches[0][0].shape[0] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", default="resnet32x4,resnet8x4", help="teacher,student")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--topk", type=int, default=10, help="cached logits per sample (0: all)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    t_name, s_name = args.pair.split(",")
    teacher = create_model(t_name, num_classes=args.classes).to(device).eval()
    student = create_model(s_name, num_classes=args.classes)
    distiller = kdlab.create_distiller("kd", student=student, teacher=teacher).to(device)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
                torch.randint(0, args.classes, (args.batch,), generator=g).to(device)) for _ in range(args.steps)]
    with torch.no_grad():  # the cache rows (built once, before training, in a real run)
        rows = [compress_logits(teacher(x).float().cpu(), args.topk) for x, _ in batches]
    time_steps(distiller, batches[:2], None, args.classes, device)  # warm-up
    online, replay = [], []
    for _ in range(args.rounds):
        online.append(time_steps(distiller, batches, None, args.classes, device))
        replay.append(time_steps(distiller, batches, rows, args.classes, device))
    a, b = statistics.median(online), statistics.median(replay)
    print(f"{args.pair} {args.size}px batch {args.batch} on {device} (top-{args.topk or 'all'} cache)")
    print(f"(a) online teacher: {a:8.1f} img/s")
    print(f"(b) replay cache:   {b:8.1f} img/s")
    print(f"replay / online: {b / a:.2f}x")


if __name__ == "__main__":
    main()
