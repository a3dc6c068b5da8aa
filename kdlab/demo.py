"""``kdlab demo``: the whole story on a small dataset, offline, in a few minutes on a CPU.

It trains a teacher, a student alone (the baseline), then the same student distilled with KD
and with DKD from that teacher, and prints one table with validation (held out of train) and
test top-1 for each. The default dataset is scikit-learn's digits (embedded, no download);
``--dataset`` points it at any registered dataset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kdlab.config import Config, from_dict
from kdlab.errors import KdlabError
from kdlab.experiment import run_experiment


@dataclass(frozen=True)
class DemoRecipe:
    teacher: str
    student: str
    epochs: int
    image_size: int | None
    batch_size: int
    lr: float
    crop_padding: int


RECIPES = {
    "digits": DemoRecipe(teacher="resnet20", student="resnet8", epochs=24, image_size=16, batch_size=64,
                         lr=0.05, crop_padding=2),
}
FALLBACK = DemoRecipe(teacher="resnet32", student="resnet8", epochs=10, image_size=None, batch_size=64,
                      lr=0.05, crop_padding=4)


def demo_configs(dataset: str, root: str, out_dir: Path, recipe: DemoRecipe, seed: int) -> dict[str, Config]:
    """The four run configs of the demo, in order (teacher first: the others read its checkpoint)."""
    warmup = max(1, recipe.epochs // 4)
    base = {
        "out_dir": str(out_dir),
        "data": {"dataset": dataset, "root": root, "val_fraction": 0.1, "batch_size": recipe.batch_size,
                 "image_size": recipe.image_size, "crop_padding": recipe.crop_padding},
        "optim": {"lr": recipe.lr, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "epochs": recipe.epochs, "warmup_epochs": 1},
        "train": {"seed": seed, "progress": False, "tensorboard": False},
    }
    teacher_ckpt = str(out_dir / "teacher" / "checkpoints" / "best.pt")
    teacher = {"name": recipe.teacher, "checkpoint": teacher_ckpt}
    runs = {
        "teacher": {"name": "teacher", "student": {"name": recipe.teacher}, "method": {"name": "ce"}},
        "student": {"name": "student", "student": {"name": recipe.student}, "method": {"name": "ce"}},
        "kd": {"name": "kd", "student": {"name": recipe.student}, "teacher": teacher,
               "method": {"name": "kd", "params": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}}},
        "dkd": {"name": "dkd", "student": {"name": recipe.student}, "teacher": teacher,
                "method": {"name": "dkd", "params": {"beta": 8.0, "warmup_epochs": warmup}}},
    }
    return {k: from_dict(Config, {**base, **v}) for k, v in runs.items()}


def run_demo(dataset: str = "digits", root: str = "data", epochs: int | None = None, out_dir: str = "runs/demo",
             teacher: str | None = None, student: str | None = None, image_size: int | None = None,
             seed: int = 0) -> list[dict]:
    recipe = RECIPES.get(dataset, FALLBACK)
    if epochs is not None and epochs < 1:
        raise KdlabError(f"--epochs must be >= 1, got {epochs}")
    recipe = DemoRecipe(teacher or recipe.teacher, student or recipe.student, epochs or recipe.epochs,
                        image_size or recipe.image_size, recipe.batch_size, recipe.lr, recipe.crop_padding)
    out = Path(out_dir) / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    configs = demo_configs(dataset, root, out, recipe, seed)
    print(f"kdlab demo: {dataset}, teacher {recipe.teacher}, student {recipe.student}, "
          f"{recipe.epochs} epochs per run, seed {seed}")
    rows = []
    for label, cfg in configs.items():
        t0 = time.time()
        print(f"  training {label:8s} ({cfg.student.name}, method {cfg.method.name}) ...", flush=True)
        summary = run_experiment(cfg)
        rows.append({"run": label, "model": cfg.student.name, "method": cfg.method.name,
                     "params": summary["params"],
                     "val_top1": summary.get("val_top1"), "test_top1": summary.get("test_top1_at_best_val"),
                     "seconds": time.time() - t0, "run_dir": summary.get("run_dir")})
    print()
    print(format_table(rows))
    n_test = summary.get("test_images")
    size = f" ({n_test} images: one image is {100 / n_test:.2f} points)" if n_test else ""
    print(f"\nval = {summary_split_note()}; test = the dataset's test split{size}, scored once with the "
          "checkpoint that was best on val.")
    print(f"runs written to {out}")
    return rows


def summary_split_note() -> str:
    return "10% of the training set, held out (stratified, split seed 0)"


def format_table(rows: list[dict]) -> str:
    header = (f"{'run':8s} {'model':10s} {'method':6s} {'params':>8s} {'val top-1':>10s} "
              f"{'test top-1':>11s} {'time':>6s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        f = lambda v: "   n/a" if v is None else f"{v:6.2f}"  # noqa: E731
        lines.append(f"{r['run']:8s} {r['model']:10s} {r['method']:6s} {r['params'] / 1e6:7.2f}M "
                     f"{f(r['val_top1']):>10s} {f(r['test_top1']):>11s} {r['seconds']:5.0f}s")
    return "\n".join(lines)
