"""The real CIFAR-10 teachers in ../shared/teachers (akamaster option-A ResNets) load and score right.

They load with ``strict=True`` into ``create_model("resnetN", num_classes=10, shortcut="A")``
(classifier named ``linear``, ``module.`` prefix stripped by the loader). The slow test checks the
top-1 accuracy that teachers.txt states for the JPEG CIFAR-10 test split in ../shared/data.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.models import count_parameters, create_model, load_checkpoint

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEACHERS = SHARED / "teachers"
ARCHIVE = SHARED / "data" / "cifar10-jpeg.tar.gz"
DEPTHS = (20, 32, 44, 56)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

pytestmark = pytest.mark.shared


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not found (the shared teachers/data are kept outside the repository)")


def _teacher(depth: int) -> tuple[torch.nn.Module, dict]:
    model = create_model(f"resnet{depth}", num_classes=10, shortcut="A")
    meta = load_checkpoint(model, TEACHERS / f"cifar10_resnet{depth}.pth", strict=True)
    return model.eval(), meta


def _expected() -> dict[int, tuple[float, float]]:
    """depth -> (stored best_prec1, top-1 % on the JPEG test split), parsed from teachers.txt."""
    table = {}
    for line in (TEACHERS / "teachers.txt").read_text().splitlines():
        m = re.match(r"^resnet(\d+)\s+([\d.]+)\s+([\d.]+)\s*%", line)
        if m:
            table[int(m.group(1))] = (float(m.group(2)), float(m.group(3)))
    return table


def _to_tensor(jpegs: list[bytes]) -> torch.Tensor:
    """ToTensor + Normalize(ImageNet mean/std), as the teachers were trained."""
    arr = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float32) for b in jpegs])
    x = torch.from_numpy(arr / 255.0).permute(0, 3, 1, 2)
    return (x - MEAN) / STD


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    with torch.inference_mode():
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return (pred == y).double().mean().item() * 100


def test_teachers_load_strict():
    _need(TEACHERS)
    expected = _expected()
    assert sorted(expected) == list(DEPTHS)
    for depth in DEPTHS:
        model, meta = _teacher(depth)
        assert set(meta) == {"best_prec1"}
        assert meta["best_prec1"] == pytest.approx(expected[depth][0], abs=0.005)
    assert count_parameters(_teacher(20)[0]) == 269_722
    assert count_parameters(_teacher(56)[0]) == 853_018


def test_resnet20_on_500_test_images():
    """Fast check: the first 50 test images of each class (500), read straight from the archive."""
    _need(TEACHERS)
    _need(ARCHIVE)
    per_class = 50
    found: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(ARCHIVE, "r:gz") as tf:
        for member in tf:
            parts = member.name.split("/")
            if len(parts) == 4 and parts[1] == "test" and member.isfile():
                if int(parts[3].split(".")[0]) < per_class:
                    found.setdefault(parts[2], []).append((parts[3], tf.extractfile(member).read()))
            elif len(found) == 10 and all(len(v) == per_class for v in found.values()):
                break
    classes = sorted(found)
    assert len(classes) == 10
    jpegs, labels = [], []
    for idx, cls in enumerate(classes):
        for _, data in sorted(found[cls]):
            jpegs.append(data)
            labels.append(idx)
    model, _ = _teacher(20)
    acc = _accuracy(model, _to_tensor(jpegs), torch.tensor(labels), batch=100)
    assert acc > 70.0, acc


@pytest.mark.slow
def test_teacher_accuracy_on_jpeg_test_split(tmp_path):
    _need(TEACHERS)
    _need(ARCHIVE)
    with tarfile.open(ARCHIVE, "r:gz") as tf:
        members = [m for m in tf.getmembers() if m.name.split("/")[1:2] == ["test"]]
        tf.extractall(tmp_path, members=members, filter="data")
    root = tmp_path / "cifar10-jpeg" / "test"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(classes) == 10
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).glob("*.jpg"))]
    assert len(files) == 10_000
    x = _to_tensor([f.read_bytes() for f, _ in files])
    y = torch.tensor([i for _, i in files])
    expected = _expected()
    measured = {}
    for depth in DEPTHS:
        model, _ = _teacher(depth)
        measured[depth] = _accuracy(model, x, y)
    print("measured top-1 (%):", {f"resnet{d}": round(a, 2) for d, a in measured.items()})
    for depth in DEPTHS:
        assert measured[depth] == pytest.approx(expected[depth][1], abs=0.05), depth
