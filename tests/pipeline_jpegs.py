"""Realistic full-size JPEGs for the file-pipeline tests and benchmarks, made from Tiny-ImageNet.

Tiny-ImageNet images (64x64, ../shared) are upscaled (bicubic) to ImageNet-like sizes and saved
as JPEG at quality 90, so they go through the same decoder paths as real photos (baseline JPEG,
4:2:0 chroma subsampling), with real image content. ``imagenet_layout`` arranges them as
torchvision's ImageNet / ImageFolder expect: ``train/<wnid>/<name>.JPEG`` and ``val/<wnid>/...``.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from shared_data import extracted

SIZES = [(500, 375), (375, 500), (500, 333), (640, 480), (333, 517)]  # (W, H), as ImageNet's commonest


def tiny_sources(n_classes: int, per_class: int, start: int = 0) -> list[tuple[str, list[Path]]]:
    """(wnid, first ``per_class`` train images) of the first ``n_classes`` Tiny-ImageNet classes."""
    root = extracted("tiny-imagenet-200-sub100.tar.gz")
    wnids = sorted((root / "wnids.txt").read_text().split())[:n_classes]
    out = []
    for w in wnids:
        files = sorted(os.listdir(root / "train" / w / "images"))[start:start + per_class]
        out.append((w, [root / "train" / w / "images" / f for f in files]))
    return out


def upscale(src: Path, dest: Path, size: tuple[int, int], quality: int = 90) -> Path:
    """``src`` resized to ``size`` (W, H) with bicubic and saved as a JPEG at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(dest, "JPEG", quality=quality)
    return dest


def realistic_jpegs(folder: Path, n: int, sizes: list[tuple[int, int]] | None = None) -> list[str]:
    """``n`` full-size JPEGs in ``folder`` (sizes cycling through ``sizes``)."""
    sizes = sizes or SIZES
    per = max(1, -(-n // 10))
    srcs = [p for _, files in tiny_sources(10, per) for p in files][:n]
    return [str(upscale(s, folder / f"{i:05d}.JPEG", sizes[i % len(sizes)])) for i, s in enumerate(srcs)]


def imagenet_layout(root: Path, classes: int, train: int, val: int,
                    sizes: list[tuple[int, int]] | None = None) -> Path:
    """``root/{train,val}/<wnid>/<wnid>_<i>.JPEG`` from Tiny-ImageNet (val from later train images)."""
    sizes = sizes or SIZES
    for split, per, start in (("train", train, 0), ("val", val, train)):
        for w, files in tiny_sources(classes, per, start):
            for i, src in enumerate(files):
                upscale(src, root / split / w / f"{w}_{i}.JPEG", sizes[i % len(sizes)])
    return root
