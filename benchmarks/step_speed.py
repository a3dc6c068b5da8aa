"""Images per second of a KD training step, resnet32x4 -> resnet8x4, batch 64, 32x32 inputs.

(a) the reference way (mdistiller/RepDistiller): a torch DataLoader over PIL images with
    per-image RandomCrop(32, 4) + flip + ToTensor + Normalize, fp32, eager;
(b) kdlab's default path: the images as one uint8 tensor, batch-wise crop/flip/normalise on the
    training device, bf16 autocast and channels_last, the same Distiller and optimizer.

Both run the same KD distiller (T=4, CE 0.1, KD 0.9) and SGD step; the teacher has random
weights (speed does not depend on them). The two paths alternate for a few rounds, so a drift in
the machine's speed hits both; the medians and the median ratio are printed.

    python benchmarks/step_speed.py [--rounds 3] [--steps 15] [--compile] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

import kdlab
from kdlab.config import TrainConfig
from kdlab.data import TensorImageSet, build_loader
from kdlab.data.batch import Batch
from kdlab.engine.device import DevicePolicy, build_policy
from kdlab.engine.trainer import prepare_distiller

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


class PILDataset(torch.utils.data.Dataset):
    """CIFAR-style dataset: uint8 HWC arrays turned into PIL images per item, as torchvision's CIFAR."""

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        self.images, self.targets = images, targets
        self.tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.tf(Image.fromarray(self.images[i])), int(self.targets[i])


def make_distiller(policy: DevicePolicy | None, device: torch.device, compile: bool = False) -> tuple:
    """The KD distiller; with a policy, prepared exactly as the Trainer prepares it."""
    torch.manual_seed(0)
    teacher = kdlab.create_model("resnet32x4", num_classes=100)
    student = kdlab.create_model("resnet8x4", num_classes=100)
    d = kdlab.create_distiller("kd", student=student, teacher=teacher)
    if policy is None:
        d.to(device)
    else:
        prepare_distiller(d, policy, compile=compile)
    d.train()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return d, opt


def step(d, opt, batch: Batch, amp: bool, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        _, terms = d(batch)
        loss = sum(terms.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_loop(batches, d, opt, amp: bool, device: torch.device, steps: int, warmup: int, bs: int) -> float:
    it = iter(batches)
    for _ in range(warmup):
        step(d, opt, next(it), amp, device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(d, opt, next(it), amp, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * bs / (time.perf_counter() - t0)


def reference_batches(ds, bs: int, workers: int, device: torch.device):
    while True:
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers,
                                             drop_last=True, persistent_workers=False)
        for x, y in loader:
            yield Batch(x.to(device), y.to(device))


def kdlab_batches(images: np.ndarray, targets: np.ndarray, bs: int, device: torch.device):
    ts = TensorImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(targets))
    loader = build_loader(ts, batch_size=bs, train=True, device=device, mean=MEAN, std=STD, crop_padding=4,
                          flip=True, drop_last=True, channels_last=True)
    epoch = 0
    while True:
        epoch += 1
        loader.set_epoch(epoch)
        yield from loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15, help="timed steps per round and path")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (a) then (b); medians are reported")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference path")
    ap.add_argument("--compile", action="store_true", help="also time kdlab's path with torch.compile")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    # one epoch covers every round, so no DataLoader restart falls inside a timed loop (a real
    # CIFAR epoch is 782 steps long, where that restart is negligible)
    n = args.batch_size * (args.rounds * args.steps + args.warmup + 10)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    targets = rng.integers(0, 100, size=n).astype(np.int64)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.steps} timed steps per path")

    policy = build_policy(TrainConfig(device=str(device)), kdlab.create_model("resnet8x4"))
    amp = policy.amp_dtype is not None
    paths = {
        "a": (make_distiller(None, device), False,
              reference_batches(PILDataset(images, targets), args.batch_size, args.workers, device)),
        "b": (make_distiller(policy, device), amp, kdlab_batches(images, targets, args.batch_size, device)),
    }
    if args.compile:
        paths["c"] = (make_distiller(policy, device, compile=True), amp,
                      kdlab_batches(images, targets, args.batch_size, device))
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.rounds):
        for key, ((d, opt), use_amp, batches) in paths.items():
            warm = args.warmup + (3 if key == "c" else 0) if r == 0 else 0
            rates[key].append(time_loop(batches, d, opt, use_amp, device, args.steps, warm, args.batch_size))
        print(f"round {r + 1}: " + ", ".join(f"({k}) {v[-1]:.1f} img/s" for k, v in rates.items())
              + f"; (b)/(a) {rates['b'][-1] / rates['a'][-1]:.2f}x")
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratios = [b / a for a, b in zip(rates["a"], rates["b"])]
    print(f"(a) reference: fp32, eager, PIL DataLoader ({args.workers} workers): {med['a']:8.1f} img/s (median)")
    print(f"(b) kdlab default ({policy.describe()}, tensor data, batched aug): {med['b']:8.1f} img/s (median)")
    if "c" in med:
        print(f"(c) kdlab default + torch.compile: {med['c']:8.1f} img/s (median)")
    print(f"ratio (b)/(a): {statistics.median(ratios):.2f}x (median of rounds; min {min(ratios):.2f}x, "
          f"max {max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
