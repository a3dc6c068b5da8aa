"""``kdlab demo --task detection``: detection distillation on tiny-imagenet-det10, offline, on a CPU.

It trains a small teacher detector (Faster R-CNN ResNet18-FPN), the student alone (MobileNetV2-FPN,
the baseline), then the same student distilled with DKD on the ROI logits and with ReviewKD + DKD,
and prints one table of COCO AP / AP50 on the validation split (held out of Tiny-ImageNet's
train) and on the test split (its official val images), each run scored with its best checkpoint.
All runs are 64-pixel images, small box heads and few proposals, so that they fit a CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kdlab.config import Config, from_dict
from kdlab.errors import KdlabError
from kdlab.evaluation import evaluate_checkpoint
from kdlab.experiment import run_experiment

DATASET = "tiny-imagenet-det10"
DETECTOR_KW = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "norm": "bn",
               "representation_size": 256, "roi_sampling_ratio": 1, "box_batch_size_per_image": 32,
               "rpn_batch_size_per_image": 64, "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 100,
               "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100}


@dataclass(frozen=True)
class DetectionDemo:
    teacher: str = "fasterrcnn_resnet18_fpn"
    student: str = "fasterrcnn_mobilenetv2_fpn"
    epochs: int = 4
    per_class: int = 30
    batch_size: int = 8
    lr: float = 0.02


def demo_configs(root: str, out_dir: Path, demo: DetectionDemo, seed: int) -> dict[str, Config]:
    """The four run configs, in order (teacher first: the distilled runs read its checkpoint)."""
    base = {
        "out_dir": str(out_dir),
        "data": {"dataset": DATASET, "root": root, "val_fraction": 0.1, "limit_per_class": demo.per_class,
                 "image_size": 64, "batch_size": demo.batch_size, "eval_batch_size": 16, "num_workers": 0},
        "optim": {"lr": demo.lr, "weight_decay": 1e-4},
        "schedule": {"name": "multistep", "epochs": demo.epochs, "milestones": [max(1, demo.epochs * 3 // 4)]},
        "train": {"seed": seed, "progress": False, "tensorboard": False, "test_at_end": False, "amp": "off",
                  "channels_last": "off"},  # channels_last doubles a CPU step (ROIAlign)
    }
    teacher = {"name": demo.teacher, "kwargs": DETECTOR_KW,
               "checkpoint": str(out_dir / "teacher" / "checkpoints" / "best.pt")}
    student = {"name": demo.student, "kwargs": DETECTOR_KW}
    runs = {
        "teacher": {"name": "teacher", "student": {"name": demo.teacher, "kwargs": DETECTOR_KW},
                    "method": {"name": "det_plain"}},
        "student": {"name": "student", "student": student, "method": {"name": "det_plain"}},
        "dkd": {"name": "dkd", "student": student, "teacher": teacher, "method": {"name": "det_dkd"}},
        "review_dkd": {"name": "review_dkd", "student": student, "teacher": teacher,
                       "method": {"name": "det_reviewkd_dkd"}},
    }
    return {k: from_dict(Config, {**base, **v}) for k, v in runs.items()}


def run_detection_demo(root: str, epochs: int | None = None, out_dir: str = "runs/demo", seed: int = 0,
                       per_class: int | None = None) -> list[dict]:
    """Train the four runs and print the AP table; returns its rows."""
    if epochs is not None and epochs < 1:
        raise KdlabError(f"--epochs must be >= 1, got {epochs}")
    demo = DetectionDemo()
    demo = DetectionDemo(demo.teacher, demo.student, epochs or demo.epochs, per_class or demo.per_class,
                         demo.batch_size, demo.lr)
    out = Path(out_dir) / f"detection-{time.strftime('%Y%m%d-%H%M%S')}"
    configs = demo_configs(root, out, demo, seed)
    print(f"kdlab demo (detection): {DATASET}, {demo.per_class} images per class, teacher {demo.teacher}, "
          f"student {demo.student}, {demo.epochs} epochs per run, seed {seed}")
    rows = []
    for label, cfg in configs.items():
        t0 = time.time()
        print(f"  training {label:10s} ({cfg.student.name}, method {cfg.method.name}) ...", flush=True)
        summary = run_experiment(cfg)
        run_dir = summary["run_dir"]
        val = evaluate_checkpoint(run_dir, split="val")
        test = evaluate_checkpoint(run_dir, split="test")
        rows.append({"run": label, "model": cfg.student.name.removeprefix("fasterrcnn_"), "method": cfg.method.name,
                     "params": summary["params"], "val_AP": val["AP"], "val_AP50": val["AP50"],
                     "test_AP": test["AP"], "test_AP50": test["AP50"], "test_images": int(test["n"]),
                     "seconds": time.time() - t0, "run_dir": run_dir})
    print()
    print(format_table(rows))
    print(f"\nCOCO AP / AP50 in percent (pycocotools); val = 10% of the training images held out, test = "
          f"{rows[-1]['test_images']} official Tiny-ImageNet val images; best checkpoint of each run (by val AP).")
    print(f"runs written to {out}")
    return rows


def format_table(rows: list[dict]) -> str:
    header = (f"{'run':10s} {'model':18s} {'method':16s} {'params':>8s} {'val AP':>7s} {'val AP50':>8s} "
              f"{'test AP':>8s} {'test AP50':>9s} {'time':>6s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['run']:10s} {r['model']:18s} {r['method']:16s} {r['params'] / 1e6:7.2f}M "
                     f"{r['val_AP']:7.2f} {r['val_AP50']:8.2f} {r['test_AP']:8.2f} {r['test_AP50']:9.2f} "
                     f"{r['seconds']:5.0f}s")
    return "\n".join(lines)
