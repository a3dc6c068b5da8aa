"""The real CIFAR-10 teachers (../shared/teachers) scored through kdlab's own data path and
``kdlab eval``, not a hand-written pipeline (test_models_teachers.py does that).

Fast: on 500 test JPEGs, kdlab's cifar10-jpeg dataset + eval loader + ``evaluate`` give resnet20
exactly the predictions of an independent PIL / ToTensor / Normalize pipeline.
Slow: ``kdlab eval <teacher>.pth ... train.amp=off`` reproduces teachers.txt's top-1 on all 10,000.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import SHARED, extracted

from kdlab.cli import main
from kdlab.data import build_dataset, build_loader
from kdlab.engine.device import DevicePolicy
from kdlab.engine.metrics import evaluate
from kdlab.models import create_model, load_checkpoint

TEACHERS = SHARED / "teachers"
pytestmark = pytest.mark.shared


def _need_teachers() -> None:
    if not (TEACHERS / "teachers.txt").is_file():
        pytest.skip(f"{TEACHERS} is absent (needs the ../shared folder)")


def _stated() -> dict[int, float]:
    """depth -> top-1 % on the JPEG test split, as teachers.txt states it."""
    out = {}
    for line in (TEACHERS / "teachers.txt").read_text().splitlines():
        m = re.match(r"^resnet(\d+)\s+[\d.]+\s+([\d.]+)\s*%", line)
        if m:
            out[int(m.group(1))] = float(m.group(2))
    return out


def test_kdlab_pipeline_equals_an_independent_one_on_500_images():
    _need_teachers()
    root = extracted("cifar10-jpeg.tar.gz")
    data = build_dataset("cifar10-jpeg", root, limit_per_class=50, val_fraction=0)
    assert len(data.test) == 500
    model = create_model("resnet20", num_classes=10, shortcut="A").eval()
    load_checkpoint(model, TEACHERS / "cifar10_resnet20.pth")

    loader = build_loader(data.test, batch_size=100, train=False, mean=data.mean, std=data.std)
    ours = evaluate(model, loader, policy=DevicePolicy(torch.device("cpu")))
    with torch.inference_mode():
        pred_ours = torch.cat([model(b.image).argmax(1) for b in loader])

    # independent: the first 50 files of each class folder, PIL decode, ToTensor, ImageNet Normalize
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / "test" / c).iterdir())[:50]]
    arr = np.stack([np.asarray(Image.open(io.BytesIO(f.read_bytes())).convert("RGB"), dtype=np.float32)
                    for f, _ in files])
    x = (torch.from_numpy(arr / 255.0).permute(0, 3, 1, 2).float() - mean) / std
    y = torch.tensor([i for _, i in files])
    with torch.inference_mode():
        pred_ref = torch.cat([model(x[i:i + 100]).argmax(1) for i in range(0, 500, 100)])

    assert torch.equal(data.test.targets, y)
    assert (pred_ours != pred_ref).sum() <= 1  # JPEG decoders may differ by a pixel level, no more
    assert ours["top1"] == pytest.approx((pred_ours == y).double().mean().item() * 100)
    assert ours["n"] == 500 and ours["top1"] > 70.0


@pytest.mark.slow
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_kdlab_eval_reproduces_teachers_txt(depth, capsys):
    _need_teachers()
    root = extracted("cifar10-jpeg.tar.gz")
    code = main(["eval", str(TEACHERS / f"cifar10_resnet{depth}.pth"), f"student.name=resnet{depth}",
                 "student.kwargs.shortcut=A", "data.dataset=cifar10-jpeg", f"data.root={root}",
                 "train.device=cpu", "train.amp=off"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["n"] == 10_000
    assert result["top1"] == pytest.approx(_stated()[depth], abs=0.005)
