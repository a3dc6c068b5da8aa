"""Turn a :class:`FileImageSet` into a :class:`TensorImageSet` when it fits in memory.

``in_memory=None`` (auto) decodes a split when a sample of its file headers agree on one size and
N x 3 x H x W bytes stay under :data:`AUTO_LIMIT_BYTES`, except ImageNet-style (``resized_crop``)
sets, which stay on files so that they keep their RandomResizedCrop pipeline; a split whose
images turn out to differ stays on files. ``in_memory=True`` always decodes (images of another size are resized to
``image_size``, or an error asks for one); ``False`` never does. Decoded tensors are cached
(:mod:`kdlab.data.cache`), so the second load only reads one file. Unreadable files follow the
set's ``bad_log`` policy: an error line, or (skip) each is replaced by the next readable image and
its label, counted, and the decoded split is not cached (so the next load counts them again).
"""

from __future__ import annotations

import bisect
import logging
import time
from pathlib import Path

import torch

from kdlab.data import cache
from kdlab.data.decode import SizeMismatch, decode_files, sample_sizes
from kdlab.data.imagesets import FileImageSet, ImageSet, TensorImageSet
from kdlab.errors import KdlabError

log = logging.getLogger("kdlab.data")

AUTO_LIMIT_BYTES = 4 * 1024**3


def to_memory(files: FileImageSet, *, name: str, root: Path, in_memory: bool | None,
              image_size: int | None) -> ImageSet:
    """Decode ``files`` into a tensor set when ``in_memory`` says so (see module doc)."""
    if in_memory is False or len(files) == 0 or (in_memory is None and files.mode == "resized_crop"):
        return files  # ImageNet-style sets keep their RandomResizedCrop pipeline unless told otherwise
    sizes = sample_sizes(files.paths)
    if image_size is not None:
        size = (image_size, image_size)
    elif len(sizes) == 1:
        size = next(iter(sizes))
    else:
        if in_memory:
            raise KdlabError(f"{name}: images under {root} differ in size ({_fmt(sizes)}); set "
                             "image_size to resize them when loading into memory, or in_memory=false")
        return files
    if in_memory is None and (len(sizes) > 1 or len(files) * 3 * size[0] * size[1] > AUTO_LIMIT_BYTES):
        return files
    path = cache.cache_dir(root) / f"{name}-{cache.fingerprint(root, files.paths, files.targets, size)}.pt"
    t0 = time.perf_counter()
    images = cache.load(path, len(files))
    if images is not None:
        log.info("%s: loaded %d cached images from %s in %.2fs", name, len(files), path,
                 time.perf_counter() - t0)
        return TensorImageSet(images, files.targets)
    bad: dict[int, str] | None = {} if files.bad_log.policy == "skip" else None
    try:
        images = decode_files(files.paths, size, resize=image_size is not None or bool(in_memory), bad=bad)
    except SizeMismatch as e:  # only in auto mode: a forced decode resizes
        log.info("%s: images differ in size (%s); keeping files", name, e)
        return files
    if bad:
        return _replace_bad(files, images, bad)
    t1 = time.perf_counter()
    cache.save(path, images)
    log.info("%s: decoded %d images in %.2fs, cached to %s in %.2fs", name, len(files), t1 - t0,
             path, time.perf_counter() - t1)
    return TensorImageSet(images, files.targets)


def _replace_bad(files: FileImageSet, images: torch.Tensor, bad: dict[int, str]) -> TensorImageSet:
    """Skip policy: each unreadable image (and its label) becomes the next readable one's."""
    n = len(files)
    good = sorted(set(range(n)) - set(bad))
    if not good:
        raise KdlabError(f"no readable image among the {n} files of this split (first: {files.paths[0]}); "
                         "check the dataset files")
    targets = files.targets.clone()
    for pos in sorted(bad):
        files.bad_log.met(files.paths[pos], bad[pos])
        src = good[bisect.bisect_right(good, pos) % len(good)]
        images[pos], targets[pos] = images[src], targets[src]
    return TensorImageSet(images, targets)


def _fmt(sizes: set[tuple[int, int]]) -> str:
    return ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
