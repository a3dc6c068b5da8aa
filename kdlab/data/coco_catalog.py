"""Detection datasets by name (``coco``, ``tiny-imagenet-det``, ``tiny-imagenet-det10``) and their bundle.

Each is registered in :data:`kdlab.data.DATASETS` (so ``kdlab list datasets`` shows it) with
``task = "detection"``; the classification path (:func:`kdlab.data.build_dataset`) refuses it in
one line and :func:`build_detection_data` builds it: three :class:`~kdlab.data.coco.CocoSet` s in a
:class:`DetectionData` bundle whose ``task`` is ``"detection"``.

``data.image_size`` is the training short side (default 800 for COCO, 128 for the 64-pixel
Tiny-ImageNet images), ``data.flip`` the horizontal flip, ``data.val_fraction`` /
``data.split_seed`` / ``data.limit_per_class`` the held-out part and the cap (tiny-imagenet-det).
COCO labels are the category ids (91 outputs with the background, as torchvision's COCO detectors,
whose checkpoints then load as teachers); tiny-imagenet-det numbers its wnids 1..K.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdlab.data.bad_files import BadFileLog
from kdlab.data.catalog import register_dataset
from kdlab.data.coco import CocoSet, detection_transform
from kdlab.data.tiny_imagenet_det import convert, find_tiny_root
from kdlab.errors import KdlabError

COCO_LAYOUT = ("the COCO 2017 layout: <root>/annotations/instances_train2017.json, "
               "<root>/annotations/instances_val2017.json, <root>/train2017/*.jpg, <root>/val2017/*.jpg")
MAX_SIZE = {"coco": 1333}


@dataclass
class DetectionData:
    """A detection dataset ready for training (the detection counterpart of ``DataBundle``)."""

    name: str
    train: CocoSet
    val: CocoSet | None
    test: CocoSet
    num_classes: int  # foreground classes + background, as torchvision's detectors count them
    classes: list[str]
    image_size: tuple[int, int]  # (short side, short side): the training short side
    splits_note: str
    task: str = "detection"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # informative: the detectors normalise
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channels: int = 3
    bad_files: BadFileLog = field(default_factory=BadFileLog)  # stays empty: an unreadable image is an error

    def __repr__(self) -> str:
        val = len(self.val) if self.val is not None else 0
        return (f"DetectionData({self.name!r}: train {len(self.train)}, val {val}, test {len(self.test)} images, "
                f"{self.num_classes - 1} classes, short side {self.image_size[0]})")


Builder = Callable[..., DetectionData]
DETECTION_BUILDERS: dict[str, Builder] = {}


def _register(name: str, doc: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        DETECTION_BUILDERS[name] = fn

        def refuse(root: Path, *, download: bool = False):  # the classification path
            raise KdlabError(f"{name} is a detection dataset; use it with a detection recipe "
                             f"(e.g. kdlab/configs/tiny-imagenet-det/...)")
        refuse.__doc__ = doc
        refuse.task = "detection"  # type: ignore[attr-defined]
        register_dataset(name)(refuse)
        return fn
    return deco


def is_detection_dataset(name: str) -> bool:
    return name in DETECTION_BUILDERS


def build_detection_data(name: str, root: str | Path, *, val_fraction: float = 0.1, split_seed: int = 0,
                         limit_per_class: int | None = None, image_size: int | None = None,
                         flip: bool = True) -> DetectionData:
    """Build detection dataset ``name`` (see the module docstring for what each option means)."""
    if name not in DETECTION_BUILDERS:
        raise KdlabError(f"{name!r} is not a detection dataset; known: {', '.join(sorted(DETECTION_BUILDERS))}")
    if not 0.0 <= val_fraction < 1.0:
        raise KdlabError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return DETECTION_BUILDERS[name](Path(root).expanduser(), val_fraction=val_fraction, split_seed=split_seed,
                                    limit_per_class=limit_per_class, image_size=image_size, flip=flip)


@_register("coco", "COCO 2017 detection (instances JSON + image folders), evaluated with pycocotools")
def coco(root: Path, *, val_fraction: float, split_seed: int, limit_per_class: int | None,
         image_size: int | None, flip: bool) -> DetectionData:
    ann = root / "annotations"
    if not (ann / "instances_train2017.json").is_file() or not (root / "train2017").is_dir():
        raise KdlabError(f"coco not found under {root}: expected {COCO_LAYOUT}")
    size = image_size or 800
    train = CocoSet(root / "train2017", ann / "instances_train2017.json", drop_empty=True, layout=COCO_LAYOUT,
                    transform=detection_transform(True, size, MAX_SIZE["coco"], flip), label_by_id=True)
    val = CocoSet(root / "val2017", ann / "instances_val2017.json", layout=COCO_LAYOUT, label_by_id=True)
    return DetectionData("coco", train, val, val, train.num_classes, train.classes, (size, size),
                         f"train: {len(train)} train2017 images with boxes; val and test: val2017 ({len(val)} images)")


def _tiny(name: str, num_classes: int | None) -> Builder:
    def build(root: Path, *, val_fraction: float, split_seed: int, limit_per_class: int | None,
              image_size: int | None, flip: bool) -> DetectionData:
        src = find_tiny_root(root)
        folder = convert(src, val_fraction=val_fraction, split_seed=split_seed, limit_per_class=limit_per_class,
                         num_classes=num_classes)
        size = image_size or 128
        train = CocoSet(src, folder / "train.json", drop_empty=True,
                        transform=detection_transform(True, size, None, flip))
        val = CocoSet(src, folder / "val.json") if val_fraction > 0 else None
        test = CocoSet(src, folder / "test.json")
        cap = f"first {limit_per_class} per class, " if limit_per_class else ""
        note = (f"train: {len(train)} Tiny-ImageNet train images ({cap}one real box each); val: "
                f"{len(val) if val else 0} held out of them ({val_fraction:g}, split_seed {split_seed}); "
                f"test: {len(test)} official val images; COCO json in {folder}")
        return DetectionData(name, train, val, test, train.num_classes, train.classes, (size, size), note)
    return build


_register("tiny-imagenet-det", "Tiny-ImageNet photos with their real boxes as COCO detection (one class per wnid)")(
    _tiny("tiny-imagenet-det", None))
_register("tiny-imagenet-det10", "tiny-imagenet-det cut to its first 10 wnids (CPU demos and tests)")(
    _tiny("tiny-imagenet-det10", 10))
