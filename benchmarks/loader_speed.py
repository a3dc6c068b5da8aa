"""Decoded + augmented training images per second: kdlab's file loader vs torchvision's reference.

Both read the same full-size JPEGs (Tiny-ImageNet images upscaled to ImageNet's common sizes,
500x375 and the like, saved at quality 90; ``tests/pipeline_jpegs.py``) from an ImageNet-layout
folder, with the same number of DataLoader workers on the same cores:

(a) reference: ``torchvision.datasets.ImageFolder`` + ``RandomResizedCrop(224)``,
    ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` (PIL) in a ``DataLoader``, as the seed
    toolboxes' ImageNet loaders build it;
(b) kdlab: ``build_dataset("imagenet", ...)`` + ``build_loader(train=True)``: libjpeg-turbo
    decode of the crop box only (``kdlab.data.jpeg_region``; reduced-size where the crop allows),
    uint8 crop/resize on tensors in the workers, uint8 batches, normalised batch-wise in the main
    process (counted in its time);
(c) kdlab with reduced-size decoding off; (d) kdlab without the partial-decode extension (whole
    images decoded, as where it is not built); (e) kdlab with contiguous batches.

kdlab's batches are channels-last (what ``train.channels_last=auto`` gives a convolutional
network, so the model takes them as they are) except in (e) (``train.channels_last=off``).

Each round times one full epoch of each path (persistent workers, started before timing); the
paths alternate, and medians and the median ratio are printed. Besides wall-clock images/s, the
CPU time of the main process and its workers per image is printed (Linux, from /proc): on a
machine shared with other jobs it is the steadier measure of how much work each path does.

    python benchmarks/loader_speed.py [--images 1024] [--workers 2] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pipeline_jpegs import imagenet_layout  # noqa: E402  (shared with the tests)

from kdlab.data import IMAGENET_STATS, build_dataset, build_loader, jpeg_region  # noqa: E402

MEAN, STD = IMAGENET_STATS


def reference_loader(root: Path, batch: int, workers: int) -> torch.utils.data.DataLoader:
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    return torch.utils.data.DataLoader(ImageFolder(str(root / "train"), transform=tf), batch_size=batch,
                                       shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def kdlab_loader(root: Path, batch: int, workers: int, reduced: bool, channels_last: bool = True):
    data = build_dataset("imagenet", root, val_fraction=0, in_memory=False, reduced_decode=reduced)
    return build_loader(data.train, batch_size=batch, train=True, mean=MEAN, std=STD, num_workers=workers,
                        channels_last=channels_last)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (the loader workers); Linux only."""
    me, tick, total = os.getpid(), os.sysconf("SC_CLK_TCK"), 0.0
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == me or int(fields[1]) == me:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def epoch_rate(loader) -> tuple[float, float]:
    """(images per wall-clock second, CPU milliseconds per image) of one pass over ``loader``."""
    n, t0, c0 = 0, time.perf_counter(), cpu_seconds()
    for item in loader:
        x = item.image if hasattr(item, "image") else item[0]
        n += x.shape[0]
    return n / (time.perf_counter() - t0), (cpu_seconds() - c0) * 1e3 / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="training images (10 classes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--folder", type=Path, default=None, help="reuse/keep the generated folder here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder or Path(tmp) / "imagenet"
        if not (root / "train").is_dir():
            t0 = time.perf_counter()
            imagenet_layout(root, classes=10, train=max(1, args.images // 10), val=1)
            print(f"wrote {args.images} JPEGs to {root} in {time.perf_counter() - t0:.1f}s")
        paths = {"a": reference_loader(root, args.batch_size, args.workers),
                 "b": kdlab_loader(root, args.batch_size, args.workers, True),
                 "c": kdlab_loader(root, args.batch_size, args.workers, False),
                 "d": kdlab_loader(root, args.batch_size, args.workers, True),
                 "e": kdlab_loader(root, args.batch_size, args.workers, True, channels_last=False)}
        names = {"a": "reference (ImageFolder + PIL transforms)", "b": "kdlab (default)",
                 "c": "kdlab (reduced-size decode off)", "d": "kdlab (partial-decode extension off)",
                 "e": "kdlab (contiguous batches)"}
        if not jpeg_region.available():
            print("note: kdlab.data._jpeg_region is not built here, so (b) decodes whole images like (d)")
        for k, loader in paths.items():  # start the persistent workers, outside the timing
            ext = jpeg_region._jpeg_region
            if k == "d":
                jpeg_region._jpeg_region = None  # the forked workers of (d) run without the extension
            next(iter(loader))
            jpeg_region._jpeg_region = ext
        rates: dict[str, list[float]] = {k: [] for k in paths}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        print(f"{args.images} images, batch {args.batch_size}, {args.workers} workers, torch threads 1, "
              f"{args.rounds} rounds of one epoch per path")
        for r in range(args.rounds):
            for k, loader in paths.items():
                rate, ms = epoch_rate(loader)
                rates[k].append(rate)
                cpu[k].append(ms)
            print(f"round {r + 1}: " + ", ".join(f"({k}) {rates[k][-1]:.1f} img/s {cpu[k][-1]:.2f} cpu-ms/img"
                                               for k in paths))
        med = {k: statistics.median(v) for k, v in rates.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
        for k in paths:
            print(f"({k}) {names[k]}: {med[k]:8.1f} img/s, {cpu_med[k]:.2f} CPU ms/img (medians)")
        ratios = [b / a for a, b in zip(rates["a"], rates["b"])]
        print(f"ratio (b)/(a): {statistics.median(ratios):.2f}x (median; min {min(ratios):.2f}x, max "
              f"{max(ratios):.2f}x); " + "; ".join(f"({k})/(a): {med[k] / med['a']:.2f}x" for k in "cde"))
        print("CPU time per image, " + "; ".join(f"(a)/({k}): {cpu_med['a'] / cpu_med[k]:.2f}x" for k in "bcde")
              + " (the work each path does; steady on a shared machine)")


if __name__ == "__main__":
    main()
