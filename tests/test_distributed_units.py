"""The pieces of multi-process training, checked in one process (the default suite).

The 2-process runs themselves are in tests/test_distributed.py (slow): here the shard arithmetic,
sharded loaders against the unsharded one, micro-batches (``train.accumulate``) against the full
batch, the one-line messages, SyncBatchNorm conversion, the meter's resume on other ranks, and the
CLI's ``--nproc`` launch and elastic auto-resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kdlab import cli
from kdlab.config import Config
from kdlab.data.batch import Batch
from kdlab.data.imagesets import TensorImageSet
from kdlab.data.loader import build_loader, shard_bounds
from kdlab.engine import distributed
from kdlab.engine.ddp import GlooSyncBatchNorm, convert_sync_bn
from kdlab.engine.meter import EpochMeter
from kdlab.engine.step import split_batch
from kdlab.engine.trainer import Trainer
from kdlab.errors import KdlabError
from kdlab.methods import create_distiller
from kdlab.models import create_model

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def images(n: int = 70, size: int = 6) -> TensorImageSet:
    g = torch.Generator().manual_seed(0)
    return TensorImageSet(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                          torch.arange(n) % 5)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_bounds_cut_a_batch_into_contiguous_nearly_equal_parts(world):
    for lo, hi in [(0, 8), (16, 23), (40, 41), (5, 5)]:
        parts = [shard_bounds(lo, hi, (r, world)) for r in range(world)]
        assert parts[0][0] == lo and parts[-1][1] == hi
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # contiguous, in rank order
        sizes = [b - a for a, b in parts]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_training_batches_are_the_parts_of_the_single_process_batches(world):
    data = images(70)
    kw = dict(batch_size=12, train=True, mean=MEAN, std=STD, crop_padding=2, seed=3, contrast_negatives=4)
    whole = build_loader(data, **kw)
    ranks = [build_loader(data, shard=(r, world), **kw) for r in range(world)]
    # 70 = 5 x 12 + 10: the short last batch still has >= world samples, so every rank keeps it
    assert len(whole) == 6 and all(len(r) == 6 for r in ranks)
    for loader in (whole, *ranks):
        loader.set_epoch(2, start_batch=1)
    for b, parts in zip(whole, zip(*ranks)):
        assert [len(p) for p in parts] == [len(b) // world + (r < len(b) % world) for r in range(world)]
        for field in ("image", "target", "index"):
            assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(b, field)), field
        assert torch.equal(torch.cat([p.extra["contrast_index"] for p in parts]), b.extra["contrast_index"])


def test_a_last_batch_smaller_than_the_world_is_dropped_in_training_and_split_in_evaluation():
    data = images(26)  # 2 x 12 + 2
    train = [build_loader(data, batch_size=12, train=True, mean=MEAN, std=STD, shard=(r, 3)) for r in range(3)]
    assert [len(t) for t in train] == [2, 2, 2]
    assert sum(len(b) for t in train for b in t) == 24
    evals = [build_loader(data, batch_size=12, train=False, mean=MEAN, std=STD, shard=(r, 3)) for r in range(3)]
    served = torch.cat([b.target for r in evals for b in r])
    assert len(served) == 26 and [sum(1 for _ in e) for e in evals] == [3, 3, 2]  # rank 2's part of the last is empty


def test_bad_shard_is_refused():
    with pytest.raises(KdlabError, match=r"shard must be \(rank, world\)"):
        build_loader(images(10), batch_size=4, train=True, mean=MEAN, std=STD, shard=(2, 2))


def test_split_batch_slices_every_per_sample_tensor():
    b = Batch(torch.randn(10, 3, 2, 2), torch.arange(10), torch.arange(10) + 100, epoch=3, step=7,
              extra={"teacher_logits": torch.randn(10, 5), "scalar": torch.tensor(1.0)})
    parts = split_batch(b, 3)
    assert [len(p) for p in parts] == [3, 3, 4]
    for field in ("image", "target", "index"):
        assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(b, field))
    assert torch.equal(torch.cat([p.extra["teacher_logits"] for p in parts]), b.extra["teacher_logits"])
    assert all(p.extra["scalar"] is b.extra["scalar"] and (p.epoch, p.step) == (3, 7) for p in parts)


def test_per_rank_batch_and_its_one_line_messages():
    assert distributed.per_rank_batch(256, 8) == 32 and distributed.per_rank_batch(256, 4, accumulate=2) == 64
    with pytest.raises(KdlabError) as e:
        distributed.per_rank_batch(30, 4)
    assert str(e.value) == ("data.batch_size=30 does not divide among 4 processes (the global batch is split "
                            "evenly); use a multiple of 4, e.g. data.batch_size=28")
    with pytest.raises(KdlabError, match=r"^train.accumulate=3 does not divide the 16 samples per process"):
        distributed.per_rank_batch(32, 2, accumulate=3)


def test_launch_env_and_rank_device():
    la = distributed.launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2"})
    assert la == distributed.Launch(rank=3, world=4, local_rank=1, restart=2)
    assert distributed.rank_device(torch.device("cuda"), la) == torch.device("cuda", 1)
    assert distributed.rank_device(torch.device("cuda", 0), la) == torch.device("cuda", 1)
    assert distributed.rank_device(torch.device("cpu"), la) == torch.device("cpu")
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    with pytest.raises(KdlabError, match="must be integers"):
        distributed.launch_env({"WORLD_SIZE": "two"})


def _mlp_trainer(tmp: Path, accumulate: int) -> Trainer:
    cfg = Config(name=f"acc{accumulate}", out_dir=str(tmp))
    cfg.data.batch_size = 16
    cfg.optim.lr = 0.1
    cfg.schedule.epochs, cfg.schedule.milestones = 2, [1]
    for k, v in dict(device="cpu", amp="off", channels_last="off", tensorboard=False, progress=False,
                     accumulate=accumulate, test_at_end=False).items():
        setattr(cfg.train, k, v)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 5))
    distiller = create_distiller("ce", student=student)
    loader = build_loader(images(64), batch_size=16, train=True, mean=MEAN, std=STD, crop_padding=1)
    return Trainer(cfg, distiller, loader, None, run_dir=tmp / cfg.name)


def test_accumulated_micro_batches_give_the_full_batch_update(tmp_path):
    runs = {}
    for acc in (1, 2, 4):
        t = _mlp_trainer(tmp_path, acc)
        summary = t.fit()
        runs[acc] = (t.distiller.student.state_dict(), summary)
    for acc in (2, 4):
        for k, v in runs[1][0].items():
            assert float((v - runs[acc][0][k]).abs().max()) < 1e-6, (acc, k)
    lines = (tmp_path / "acc4" / "metrics.jsonl").read_text()
    assert '"step": 8' in lines  # 4 optimizer steps per epoch, whatever the micro-batches


def test_sync_bn_conversion_keeps_weights_hooks_and_the_teacher():
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet8", num_classes=10)
    distiller = create_distiller("kd", student=student, teacher=teacher)
    bn = next(m for m in student.modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    bn.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    weight = bn.weight
    x = torch.randn(4, 3, 32, 32)
    distiller.eval()
    before = student(x)
    count = sum(isinstance(m, nn.BatchNorm2d) for m in student.modules())
    n = convert_sync_bn(distiller, torch.device("cpu"))
    assert n == count > 0
    assert not any(type(m) is nn.BatchNorm2d for m in distiller.student.modules())
    assert any(type(m) is nn.BatchNorm2d for m in distiller.teacher.modules())  # the teacher is left alone
    assert any(m.weight is weight for m in distiller.student.modules() if isinstance(m, GlooSyncBatchNorm))
    seen.clear()
    torch.testing.assert_close(distiller.student(x), before)  # same weights and statistics
    assert seen  # the feature tap on the converted BatchNorm still fires
    distiller.train()
    ref = nn.BatchNorm2d(4)
    sync = GlooSyncBatchNorm(4)
    y = torch.randn(6, 4, 3, 3)
    torch.testing.assert_close(sync(y), ref(y))  # one process: plain batch statistics
    torch.testing.assert_close(sync.running_var, ref.running_var)


def test_on_cuda_the_conversion_uses_torchs_sync_batchnorm():
    distiller = create_distiller("ce", student=create_model("resnet8", num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    distiller.eval()
    before = distiller.student(x)
    convert_sync_bn(distiller, torch.device("cuda"))  # conversion only: no CUDA needed until a synced forward
    assert any(type(m) is nn.SyncBatchNorm for m in distiller.student.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in distiller.student.modules())
    torch.testing.assert_close(distiller.student(x), before)  # eval mode: running statistics, no sync


def test_a_resumed_meter_counts_its_totals_on_rank_zero_only(monkeypatch):
    m = EpochMeter(torch.device("cpu"))
    m.update(torch.tensor(2.0), {"ce": torch.tensor(2.0)}, torch.eye(3), torch.tensor([0, 1, 0]), 0.1, 3)
    state = m.state_dict()
    assert (state["n"], state["loss"], state["correct"]) == (3, 6.0, 2)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    other = EpochMeter(torch.device("cpu"))
    other.load_state_dict(state)
    assert (other.n, float(other.loss), int(other.correct), other.steps) == (0, 0.0, 0, 1)
    assert float(other.terms["ce"]) == 0.0


def test_nproc_launches_torchrun_on_the_same_command(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: seen.setdefault("cmd", cmd) and 0)
    rc = cli.main(["train", "some.yaml", "--nproc", "4", "optim.lr=0.1", "--max-restarts=2", "--name", "x"])
    assert rc == 0
    cmd = seen["cmd"]
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "--max-restarts=2"]
    assert cmd[6:] == ["-m", "kdlab", "train", "some.yaml", "optim.lr=0.1", "--name", "x"]


def test_a_torchrun_restart_resumes_the_run_by_itself(monkeypatch, tmp_path):
    cfg = Config(name="r", out_dir=str(tmp_path))
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert cli.elastic_start(cfg, False, False) == (False, False)  # first attempt: as asked
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert cli.elastic_start(cfg, False, False) == (False, True)  # failed before any checkpoint: start over
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "last.pt").write_bytes(b"x")
    assert cli.elastic_start(cfg, False, True) == (True, False)  # continue from last.pt


@pytest.mark.shared  # JPEGs made from ../shared's Tiny-ImageNet
@pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
def test_sharded_file_loader_serves_the_parts_of_the_single_process_batches(tmp_path):
    from pipeline_jpegs import realistic_jpegs

    from kdlab.data import IMAGENET_STATS, FileImageSet

    files = FileImageSet(tuple(realistic_jpegs(tmp_path, 7)), torch.arange(7) % 3)
    kw = dict(batch_size=4, train=True, mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1], num_workers=0,
              with_index=True, seed=5)
    whole = list(build_loader(files, **kw))
    ranks = [list(build_loader(files, shard=(r, 2), **kw)) for r in range(2)]
    assert [len(b) for b in whole] == [4, 3] and [[len(b) for b in r] for r in ranks] == [[2, 2], [2, 1]]
    for b, parts in zip(whole, zip(*ranks)):
        assert torch.equal(torch.cat([p.index for p in parts]), b.index)
        assert torch.equal(torch.cat([p.image for p in parts]), b.image)  # same RandomResizedCrop per sample


def test_init_on_cuda_picks_nccl_and_the_local_rank_device(monkeypatch):
    seen = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)  # no store of ours: torch reads the env itself
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda d: seen.setdefault("device", d))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.setdefault("pg", kw))
    launch = distributed.init(torch.device("cuda"))
    assert launch.rank == 1 and launch.world == 2
    assert seen["device"] == torch.device("cuda", 1) and seen["pg"]["backend"] == "nccl"
    seen.clear()
    distributed.init(torch.device("cpu"))
    assert "device" not in seen and seen["pg"]["backend"] == "gloo"


def test_each_restart_attempt_sees_its_own_keys_of_torchruns_store(monkeypatch):
    import datetime
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)  # rank 0 hosts the store
    timeout = datetime.timedelta(seconds=20)
    store = distributed.attempt_store(distributed.Launch(rank=0, world=1, restart=2), timeout)
    store.set("rank0_addr", "new")
    base = distributed.dist.TCPStore("127.0.0.1", port, 1, is_master=False, timeout=timeout)
    assert base.get("kdlab/attempt_2/rank0_addr") == b"new"  # under this attempt's prefix
    assert not base.check(["rank0_addr"])  # not where an earlier attempt's ranks published theirs
