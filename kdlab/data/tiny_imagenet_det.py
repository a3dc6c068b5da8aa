"""``tiny-imagenet-det``: Tiny-ImageNet's real photos and real boxes as a COCO-format detection dataset.

Every Tiny-ImageNet training image comes with one box (``train/<wnid>/<wnid>_boxes.txt``: file,
x0, y0, x1, y1, inclusive pixel coordinates), every official val image with one box too
(``val/val_annotations.txt``). :func:`convert` writes three COCO ``instances`` files:

* ``train.json`` / ``val.json``: the training images of each class, ``limit_per_class`` of them
  (first in file order) when set, of which a seeded ``val_fraction`` per class is held out as val;
* ``test.json``: the official val images of the same classes (for final numbers only).

Categories are the wnids in sorted order (id 1..K, name = wnid); ``num_classes`` keeps only the
first K wnids. Image ``file_name`` s are relative to the Tiny-ImageNet root, so no image is copied.
The files go to a cache folder outside the repository (``$KDLAB_CACHE/tiny-imagenet-det/<key>``,
default ``~/.cache/kdlab``), keyed by the source path and the options, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from kdlab.errors import KdlabError

LAYOUT = "wnids.txt, train/<wnid>/images/*.JPEG with train/<wnid>/<wnid>_boxes.txt and val/val_annotations.txt"
SUBFOLDERS = ("tiny-imagenet-200", "tiny-imagenet-200-sub100")
IMAGE_SIZE = 64
FORMAT_VERSION = 1


def find_tiny_root(root: Path) -> Path:
    """``root`` or its Tiny-ImageNet subfolder holding the boxes files; one error line otherwise."""
    for cand in (root, *(root / s for s in SUBFOLDERS)):
        if (cand / "wnids.txt").is_file() and (cand / "train").is_dir():
            return cand
    raise KdlabError(f"tiny-imagenet-det not found: expected {root} (or {root}/{SUBFOLDERS[0]}) to hold {LAYOUT}")


def cache_dir() -> Path:
    return Path(os.environ.get("KDLAB_CACHE") or Path.home() / ".cache" / "kdlab") / "tiny-imagenet-det"


def _coco_box(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """Inclusive pixel corners -> COCO [x, y, w, h] (a box 0..63 covers the whole 64-pixel side)."""
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)]


def _read_boxes(path: Path) -> list[tuple[str, list[float]]]:
    if not path.is_file():
        raise KdlabError(f"tiny-imagenet-det: {path} is missing; expected {LAYOUT}")
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            rows.append((parts[0], _coco_box(*map(int, parts[1:]))))
    return rows


def _document(images: list[tuple[str, list[float], int]], wnids: list[str]) -> dict:
    doc: dict = {"info": {"description": "Tiny-ImageNet boxes as COCO (kdlab)"}, "images": [], "annotations": [],
                 "categories": [{"id": i + 1, "name": w, "supercategory": "object"} for i, w in enumerate(wnids)]}
    for k, (file_name, box, cat) in enumerate(images, start=1):
        doc["images"].append({"id": k, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        doc["annotations"].append({"id": k, "image_id": k, "category_id": cat, "bbox": box,
                                   "area": box[2] * box[3], "iscrowd": 0})
    return doc


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def convert(root: Path, *, val_fraction: float = 0.1, split_seed: int = 0, limit_per_class: int | None = None,
            num_classes: int | None = None, out: Path | None = None) -> Path:
    """Write (once) and return the folder holding ``train.json``, ``val.json`` and ``test.json``."""
    src = find_tiny_root(Path(root).expanduser()).resolve()
    wnids = sorted({w for w in (src / "wnids.txt").read_text().split() if w})
    if num_classes is not None:
        if num_classes > len(wnids):
            raise KdlabError(f"tiny-imagenet-det: {num_classes} classes asked, {src} has {len(wnids)}")
        wnids = wnids[:num_classes]
    key = json.dumps([str(src), val_fraction, split_seed, limit_per_class, wnids, FORMAT_VERSION])
    folder = (out or cache_dir()) / hashlib.sha256(key.encode()).hexdigest()[:16]
    if all((folder / f"{s}.json").is_file() for s in ("train", "val", "test")):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(split_seed)
    train, val = [], []
    for cat, w in enumerate(wnids, start=1):
        rows = _read_boxes(src / "train" / w / f"{w}_boxes.txt")
        rows.sort(key=lambda r: int(r[0].rsplit("_", 1)[1].split(".")[0]))
        rows = rows[:limit_per_class] if limit_per_class else rows
        items = [(f"train/{w}/images/{f}", box, cat) for f, box in rows]
        held = set(rng.sample(range(len(items)), round(val_fraction * len(items)))) if val_fraction > 0 else set()
        train += [x for i, x in enumerate(items) if i not in held]
        val += [x for i, x in enumerate(items) if i in held]
    test = []
    ann = src / "val" / "val_annotations.txt"
    if ann.is_file():
        cat_of = {w: i for i, w in enumerate(wnids, start=1)}
        per_class: dict[str, int] = {}
        for line in ann.read_text().splitlines():
            parts = line.split()
            if len(parts) == 6 and parts[1] in cat_of:
                per_class[parts[1]] = per_class.get(parts[1], 0) + 1
                if limit_per_class is None or per_class[parts[1]] <= limit_per_class:
                    test.append((f"val/images/{parts[0]}", _coco_box(*map(int, parts[2:])), cat_of[parts[1]]))
    for name, items in (("train", train), ("val", val), ("test", test)):
        _write_json(folder / f"{name}.json", _document(items, wnids))
    return folder
