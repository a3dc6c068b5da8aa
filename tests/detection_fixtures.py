"""Small COCO-format fixtures for the detection tests: a few generated images and a JSON written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE = (40, 60)  # height, width of every fixture image


def write_coco(root: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None,
               name: str = "ann.json") -> tuple[Path, Path]:
    """Write images (random pixels, seeded by id) and an instances JSON under ``root``; return (folder, json)."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for im in images:
        rng = np.random.default_rng(im["id"])
        pixels = rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / im["file_name"])
    cats = categories if categories is not None else [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    ann = root / name
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return folder, ann


def image(i: int) -> dict:
    return {"id": i, "file_name": f"{i}.png", "height": SIZE[0], "width": SIZE[1]}


def box(aid: int, image_id: int, bbox: list[float], cat: int = 3, crowd: int = 0) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": bbox[2] * bbox[3],
            "iscrowd": crowd}


class TruthDetector(torch.nn.Module):
    """A fake detector that finds each image's ground truth in its dataset by the pixels.

    :meth:`detections` turns (position in the dataset, target) into one image's output; the default
    returns the truth itself with score 1 (a perfect detector).
    """

    def __init__(self, ds) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # a parameter, so evaluators find a device
        self.truth = [ds[i] for i in range(len(ds))]

    def detections(self, k: int, t: dict) -> dict:
        return {"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"],
                "scores": torch.ones(len(t["labels"]))}

    def forward(self, images):
        return [self.detections(*next((k, t) for k, (x, t) in enumerate(self.truth) if torch.equal(x, im)))
                for im in images]
