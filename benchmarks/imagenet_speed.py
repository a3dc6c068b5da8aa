"""KD ResNet34 -> ResNet18 at 224 px: training images/s and peak memory, reference vs kdlab.

(a) the reference way (mdistiller / RepDistiller ImageNet): fp32, eager, one process, a
    ``DataLoader`` over ``torchvision.datasets.ImageFolder`` with PIL ``RandomResizedCrop(224)`` +
    flip + ToTensor + Normalize; the same KD distiller (T=4, CE 1 + KD 1) and SGD step;
(b) kdlab's default path, built by kdlab's own machinery: ``build_experiment`` (the
    ``imagenet`` dataset, the file loader, the distiller) and the :class:`~kdlab.engine.Trainer`
    (device policy: bf16 autocast / channels_last where it applies, optimizer, schedule), timing
    its training step on the training loader's batches.

Teacher and student have random weights (speed does not depend on them). The images are
full-size JPEGs made from Tiny-ImageNet (``tests/pipeline_jpegs.py``) in an ImageNet layout. Each
path runs in its own process, so its peak memory is its own: the peak resident set of the main
process on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. Defaults: a small batch on the
CPU; batch 256 on one GPU when CUDA is present. The multi-GPU run (torchrun, all GPUs) needs
kdlab's DDP engine; it is skipped, saying so, when that is not available.

    python benchmarks/imagenet_speed.py [--batch-size 8] [--steps 4] [--warmup 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(step, batches, steps: int, warmup: int, device: torch.device) -> float:
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        n += step(next(it))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def forever(loader):
    while True:
        yield from loader


def run_reference(args, device: torch.device) -> dict:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    import kdlab
    from kdlab.data import IMAGENET_STATS
    from kdlab.data.batch import Batch

    mean, std = IMAGENET_STATS
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    ds = ImageFolder(str(args.root / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", drop_last=True)
    torch.manual_seed(0)
    teacher = kdlab.create_model("torchvision:resnet34", num_classes=len(ds.classes))
    student = kdlab.create_model("torchvision:resnet18", num_classes=len(ds.classes))
    d = kdlab.create_distiller("kd", student=student, teacher=teacher).to(device)
    d.train()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step(item) -> int:
        x, y = item
        _, terms = d(Batch(x.to(device, non_blocking=True), y.to(device, non_blocking=True)))
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return x.shape[0]

    rate = timed(step, forever(loader), args.steps, args.warmup, device)
    return {"images_per_s": rate, "peak_mb": peak_memory_mb(device), "how": "fp32 eager, ImageFolder + PIL"}


def run_kdlab(args, device: torch.device) -> dict:
    import kdlab
    from kdlab.config import Config, from_dict
    from kdlab.engine.trainer import Trainer
    from kdlab.experiment import build_experiment

    work = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    classes = len([p for p in (args.root / "train").iterdir() if p.is_dir()])
    teacher_file = work / "teacher.pth"
    torch.save(kdlab.create_model("torchvision:resnet34", num_classes=classes).state_dict(), teacher_file)
    cfg = from_dict(Config, {
        "name": "speed", "out_dir": str(work / "runs"),
        "data": {"dataset": "imagenet", "root": str(args.root), "val_fraction": 0, "in_memory": False,
                 "batch_size": args.batch_size, "num_workers": args.workers},
        "student": {"name": "torchvision:resnet18"},
        "teacher": {"name": "torchvision:resnet34", "checkpoint": str(teacher_file)},
        "method": {"name": "kd"}, "optim": {"lr": 0.1, "weight_decay": 1e-4},
        "schedule": {"name": "multistep", "epochs": 100, "milestones": [30, 60, 90]},
        "train": {"device": str(device), "progress": False, "tensorboard": False},
    })
    exp = build_experiment(cfg)
    trainer = Trainer(cfg, exp.distiller, exp.train_loader, exp.val_loader, exp.test_loader, run_dir=exp.run_dir)
    trainer.distiller.train()

    def step(batch) -> int:
        trainer._train_step(batch, 1)  # the exact step fit() runs (autocast, memory format, optimizer)
        return batch.target.shape[0]

    rate = timed(step, forever(exp.train_loader), args.steps, args.warmup, device)
    return {"images_per_s": rate, "peak_mb": peak_memory_mb(device), "how": trainer.policy.describe()}


def child(args) -> None:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    out = (run_reference if args.path == "a" else run_kdlab)(args, device)
    print("RESULT " + json.dumps(out))


def spawn(args, path: str) -> dict:
    cmd = [sys.executable, __file__, "--path", path, "--root", str(args.root), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--workers", str(args.workers),
           "--device", args.device, "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
    if res.returncode != 0 or line is None:
        raise SystemExit(f"path ({path}) failed:\n{res.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def multi_gpu_note() -> str:
    n = torch.cuda.device_count()
    if n <= 1:
        return f"multi-GPU: skipped ({n} CUDA device(s))"
    try:
        import kdlab.engine.distributed  # noqa: F401  (the DDP engine, from another branch)
    except ImportError:
        return (f"multi-GPU: skipped: {n} GPUs, but kdlab.engine.distributed (DDP) is not on this branch; "
                f"run `torchrun --nproc_per_node={n} -m kdlab train ...` once it is")
    return f"multi-GPU: {n} GPUs found; time `torchrun --nproc_per_node={n} -m kdlab train` with the DDP engine"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    ap.add_argument("--batch-size", type=int, default=256 if cuda else 8)
    ap.add_argument("--steps", type=int, default=20 if cuda else 4)
    ap.add_argument("--warmup", type=int, default=3 if cuda else 1)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 2) if cuda else 2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per path (0: torch's default)")
    ap.add_argument("--root", type=Path, default=None, help="an ImageNet-layout folder (default: generated)")
    ap.add_argument("--path", choices=["a", "b"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.path:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.root is None:
            from pipeline_jpegs import imagenet_layout

            need = args.batch_size * (args.steps + args.warmup + 1)
            args.root = imagenet_layout(Path(tmp) / "imagenet", classes=args.classes,
                                        train=-(-need // args.classes), val=1)
        print(f"device {args.device}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
              f"{args.workers} workers, torch {torch.__version__}")
        a, b = spawn(args, "a"), spawn(args, "b")
    print(f"(a) reference ({a['how']}): {a['images_per_s']:8.1f} img/s, peak {a['peak_mb']:.0f} MiB")
    print(f"(b) kdlab default ({b['how']}): {b['images_per_s']:8.1f} img/s, peak {b['peak_mb']:.0f} MiB")
    print(f"ratio (b)/(a): {b['images_per_s'] / a['images_per_s']:.2f}x images/s, "
          f"{b['peak_mb'] / a['peak_mb']:.2f}x peak memory")
    if args.device.startswith("cuda"):
        print(multi_gpu_note())


if __name__ == "__main__":
    main()
