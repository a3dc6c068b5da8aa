"""data.on_bad_file: a truncated JPEG or a non-image named .jpg gives one line naming it (error),
or a warning and a deterministic, counted replacement (skip): in the main process and inside
DataLoader workers, for every file-based layout, train and eval loaders, and in summary.json."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from kdlab.cli import main
from kdlab.data import IMAGENET_STATS, FileImageSet, TensorImageSet, build_dataset, build_loader
from kdlab.data.bad_files import BadImageFile
from kdlab.errors import KdlabError

MEAN, STD = IMAGENET_STATS
CLASSES = ["ant", "bee", "cow"]


def _jpeg(c: int, i: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(10 * c + i)
    base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)  # smooth: decodes like a photo
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def spoil(path: Path, kind: str) -> Path:
    """Make ``path`` a truncated JPEG (``truncated``) or a text file named .jpg (``not_image``)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"these are not the pixels\n" * 4)
    return path


def folder_tree(root: Path, eval_dir: str = "val", train: int = 4, test: int = 2, size=(32, 32),
                ext: str = "jpg") -> Path:
    for split, n in (("train", train), (eval_dir, test)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{i}.{ext}").write_bytes(_jpeg(c, i, size))
    return root


def tiny_tree(root: Path, train: int = 4, val: int = 2) -> Path:
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(CLASSES) + "\n")
    lines = []
    for c, w in enumerate(CLASSES):
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(train):
            (root / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(_jpeg(c, i, (64, 64)))
        for i in range(val):
            name = f"val_{c * val + i}.JPEG"
            (root / "val" / "images").mkdir(parents=True, exist_ok=True)
            (root / "val" / "images" / name).write_bytes(_jpeg(c, 50 + i, (64, 64)))
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def _one_line(e: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg and "worker process" not in msg, msg
    assert type(e.value) is BadImageFile
    assert f"unreadable image file {path} (" in msg and "data.on_bad_file=skip" in msg
    return msg


@pytest.mark.parametrize("kind", ["truncated", "not_image"])
def test_error_in_the_main_process_decode(tmp_path, kind):
    """Same-size folder: decoded into memory in the main process; the bad file is named."""
    root = folder_tree(tmp_path / "d")
    bad = spoil(root / "train" / "bee" / "1.jpg", kind)
    with pytest.raises(KdlabError) as e:
        build_dataset("imagefolder", root, val_fraction=0)
    msg = _one_line(e, bad)
    assert ("Truncated" in msg or "truncated" in msg) if kind == "truncated" else "cannot identify" in msg


@pytest.mark.parametrize("kind", ["truncated", "not_image"])
def test_error_inside_a_worker_mid_epoch(tmp_path, kind):
    root = folder_tree(tmp_path / "d", size=(80, 60))
    bad = spoil(root / "train" / "cow" / "2.jpg", kind)
    data = build_dataset("imagenet", root, val_fraction=0, in_memory=False)
    loader = build_loader(data.train, batch_size=4, train=True, mean=MEAN, std=STD, num_workers=2)
    with pytest.raises(KdlabError) as e:
        list(loader)
    _one_line(e, bad)


def test_skip_inside_workers_replaces_with_the_next_good_index_and_counts(tmp_path, caplog):
    root = folder_tree(tmp_path / "d", size=(80, 60))
    bad1 = spoil(root / "train" / "ant" / "3.jpg", "truncated")  # index 3: replaced by 4 (bee/0)
    bad2 = spoil(root / "train" / "cow" / "3.jpg", "not_image")  # index 11, the last: wraps to 0
    data = build_dataset("imagenet", root, val_fraction=0, in_memory=False, on_bad_file="skip")
    assert data.train.paths[3] == str(bad1) and data.train.paths[11] == str(bad2)
    loader = build_loader(data.train, batch_size=4, train=True, mean=MEAN, std=STD, num_workers=2,
                          with_index=True, seed=3)
    with caplog.at_level(logging.WARNING, logger="kdlab.data"):
        batches = list(loader)
        again = list(loader)  # a second epoch meets them again: replaced again, not re-warned
    served = torch.cat([b.index for b in batches]).tolist()
    assert len(served) == 12 and 3 not in served and 11 not in served
    assert served.count(4) == 2 and served.count(0) == 2  # each bad one became its next good index
    targets = torch.cat([b.target for b in batches])
    assert torch.equal(targets, data.train.targets[torch.tensor(served)])
    assert len(again) == 3
    log = loader.bad_files
    assert log is data.bad_files and log.count == 2 and log.replaced == 4
    s = log.summary()
    assert s["count"] == 2 and sorted(s["files"]) == sorted([str(bad1), str(bad2)]) and s["policy"] == "skip"
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable image file" in r.getMessage()]
    assert len(warned) == 2 and all("\n" not in w for w in warned)


def test_skip_in_the_eval_loader_in_the_main_process(tmp_path):
    root = folder_tree(tmp_path / "d", size=(80, 60))
    spoil(root / "val" / "bee" / "0.jpg", "truncated")  # test index 2 -> 3 (bee/1)
    data = build_dataset("imagenet", root, val_fraction=0, in_memory=False, on_bad_file="skip")
    loader = build_loader(data.test, batch_size=4, train=False, mean=MEAN, std=STD, num_workers=0,
                          with_index=True)
    batches = list(loader)
    assert torch.cat([b.index for b in batches]).tolist() == [0, 1, 3, 3, 4, 5]
    assert torch.equal(batches[0].image[2], batches[0].image[3]) and data.bad_files.count == 1


def test_skip_when_decoding_into_memory_replaces_image_and_label(tmp_path):
    root = folder_tree(tmp_path / "d")
    spoil(root / "train" / "ant" / "3.jpg", "not_image")  # index 3 -> 4 (a bee)
    spoil(root / "val" / "cow" / "1.jpg", "truncated")  # test index 5, the last -> 0
    data = build_dataset("imagefolder", root, val_fraction=0, on_bad_file="skip")
    assert isinstance(data.train, TensorImageSet) and isinstance(data.test, TensorImageSet)
    assert torch.equal(data.train.images[3], data.train.images[4]) and data.train.targets[3] == 1
    assert torch.equal(data.test.images[5], data.test.images[0]) and data.test.targets[5] == 0
    assert data.bad_files.count == 2 and data.bad_files.replaced == 2
    assert not list((root / ".kdlab-cache").glob("*")) if (root / ".kdlab-cache").exists() else True
    again = build_dataset("imagefolder", root, val_fraction=0, on_bad_file="skip")  # not from a cache:
    assert again.bad_files.count == 2  # counted again


@pytest.mark.parametrize("in_memory", [None, False])
def test_tiny_imagenet_layout(tmp_path, in_memory):
    root = tiny_tree(tmp_path / "tiny")
    bad = spoil(root / "val" / "images" / "val_3.JPEG", "truncated")
    with pytest.raises(KdlabError) as e:
        d = build_dataset("tiny-imagenet", root, val_fraction=0, in_memory=in_memory)
        list(build_loader(d.test, batch_size=4, train=False, mean=MEAN, std=STD, num_workers=2))
    _one_line(e, bad)
    d = build_dataset("tiny-imagenet", root, val_fraction=0, in_memory=in_memory, on_bad_file="skip")
    assert isinstance(d.test, FileImageSet) == (in_memory is False)
    xs = torch.cat([b.image for b in build_loader(d.test, batch_size=4, train=False, mean=MEAN, std=STD,
                                                 num_workers=2)])
    assert xs.shape == (6, 3, 64, 64) and torch.equal(xs[3], xs[4]) and d.bad_files.count == 1


def test_cifar10_jpeg_layout_train_loader_with_workers(tmp_path):
    root = folder_tree(tmp_path / "cifar10-jpeg", eval_dir="test")
    bad = spoil(root / "train" / "bee" / "0.jpg", "not_image")
    d = build_dataset("cifar10-jpeg", tmp_path, val_fraction=0, in_memory=False, on_bad_file="skip")
    loader = build_loader(d.train, batch_size=5, train=True, mean=MEAN, std=STD, num_workers=2, with_index=True)
    served = torch.cat([b.index for b in loader]).tolist()
    assert sorted(served) == sorted([i for i in range(12) if i != 4] + [5])
    assert d.bad_files.summary()["files"] == [str(bad)]


def test_bad_policy_value_is_one_line(tmp_path):
    with pytest.raises(KdlabError, match="data.on_bad_file must be one of error, skip; got 'ignore'"):
        build_dataset("imagefolder", folder_tree(tmp_path / "d"), on_bad_file="ignore")


def _config(tmp_path: Path, root: Path, policy: str) -> Path:
    cfg = {"out_dir": str(tmp_path / "runs"), "name": f"run-{policy}",
           "data": {"dataset": "cifar10-jpeg", "root": str(root), "val_fraction": 0.25, "batch_size": 4,
                    "eval_batch_size": 8, "in_memory": False, "num_workers": 2, "on_bad_file": policy},
           "student": {"name": "resnet8"}, "method": {"name": "ce"},
           "schedule": {"name": "cosine", "epochs": 1},
           "train": {"progress": False, "tensorboard": False, "seed": 1, "max_steps": 2}}
    path = tmp_path / f"{policy}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # two short training runs: ~6 s on a quiet machine, 20 s on a loaded one
def test_cli_run_error_line_and_skip_count_in_summary_json(tmp_path, capsys):
    root = folder_tree(tmp_path / "cifar10-jpeg", eval_dir="test")
    bad = spoil(root / "test" / "ant" / "1.jpg", "truncated")  # met by the test loader after training
    assert main(["train", str(_config(tmp_path, tmp_path, "error"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"unreadable image file {bad}" in err[0], err
    assert main(["train", str(_config(tmp_path, tmp_path, "skip"))]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "runs" / "run-skip" / "summary.json").read_text())
    assert summary["bad_files"]["count"] == 1 and summary["bad_files"]["files"] == [str(bad)]
