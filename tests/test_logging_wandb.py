"""W&B logging back-end: off by default, a real run in W&B offline mode writes its files, and a
missing wandb package or a bad mode is one line."""

from __future__ import annotations

import json
import sys
import time

import pytest

from kdlab.config import load_config
from kdlab.engine.logging import RunLogger
from kdlab.errors import KdlabError
from kdlab.experiment import run_experiment

DIGITS = ["data.dataset=digits", "data.root=unused", "data.subset_size=120", "data.val_fraction=0.25",
          "data.batch_size=30", "data.num_workers=0", "data.crop_padding=0", "train.progress=false",
          "train.tensorboard=false", "student.name=resnet8", "method.name=ce", "schedule.epochs=2"]


def wandb_records(path) -> list:
    """The protobuf records of an offline ``run-<id>.wandb`` file (a LevelDB-style log: a 7-byte file
    header, then 32 KiB blocks of records with a 7-byte header: crc32, length, type; types 1 = full,
    2/3/4 = first/middle/last piece)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, out, buf = path.read_bytes(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos < len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def test_wandb_is_off_by_default(tmp_path):
    cfg = load_config(None, ["student.name=resnet8"])
    assert cfg.log.wandb is False
    logger = RunLogger.from_config(tmp_path, cfg)
    assert logger._backends == []
    logger.close()
    assert not (tmp_path / "wandb").exists()


def test_a_run_in_wandb_offline_mode_writes_its_files(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'kdlab[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(None, [f"out_dir={tmp_path}", "name=w", *DIGITS, "log.wandb=true", "log.mode=offline",
                             "log.project=kdlab-test", "log.tags=[a,b]"])
    summary = run_experiment(cfg)
    run_dir = tmp_path / "w"
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    offline = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    for _ in range(100):  # wandb-core may still be flushing the file after finish() returns
        records = wandb_records(offline[0] / f"run-{run_id}.wandb")
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds:
            break
        time.sleep(0.1)
    assert "run" in kinds and "exit" in kinds, kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = _items(run.config.update)
    assert config["student"]["name"] == "resnet8" and config["log"]["project"] == "kdlab-test"  # the kdlab config
    assert (run.project, list(run.tags)) == ("kdlab-test", ["a", "b"])
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    train = [h for h in history if "train/loss" in h]
    assert [h["trainer/step"] for h in train] == [3, 6]  # one record per epoch, at its trainer step
    assert [h["val/top1"] for h in history if "val/top1" in h] == pytest.approx(
        [json.loads(line)["top1"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
         if '"split": "val"' in line])
    assert [h["test_last/top1"] for h in history if "test_last/top1" in h] == pytest.approx([summary["test_top1_last"]])
    summ = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summ.update(_items(r.summary.update))
    assert summ["val_top1"] == pytest.approx(summary["val_top1"]) and summ["steps"] == summary["steps"]
    assert wandb.run is None  # finished


def test_without_wandb_installed_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    cfg = load_config(None, ["student.name=resnet8", "log.wandb=true"])
    with pytest.raises(KdlabError, match=r"log\.wandb=true needs Weights & Biases: pip install 'kdlab\[wandb\]'"):
        RunLogger.from_config(tmp_path, cfg)


def test_bad_wandb_mode_is_one_line():
    with pytest.raises(KdlabError, match=r"log\.mode='cloud' is out of range: it must be one of online, offline"):
        load_config(None, ["log.mode=cloud"])
