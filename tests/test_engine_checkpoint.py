"""Atomic checkpoint writes: a failed or killed save never leaves a broken file behind."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kdlab.engine import checkpoint as ckpt
from kdlab.engine.checkpoint import load_checkpoint_file, save_checkpoint, write_text_atomic
from kdlab.errors import KdlabError


def test_save_and_load_round_trip(tmp_path):
    obj = {"w": torch.arange(5.0), "epoch": 3, "rng": (3, (1, 2, 3), None), "cfg": {"a": [1, 2]}}
    path = save_checkpoint(obj, tmp_path / "sub" / "last.pt")
    back = load_checkpoint_file(path)
    assert torch.equal(back["w"], obj["w"]) and back["epoch"] == 3 and back["cfg"] == {"a": [1, 2]}
    assert back["rng"] == (3, (1, 2, 3), None)
    assert os.listdir(tmp_path / "sub") == ["last.pt"]  # no temp file left


def test_failure_mid_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temp file, then the write dies
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KdlabError, match=r"could not write .*last.pt \(No space left on device\); any earlier "
                       r"last.pt is intact.*--resume") as e:
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint_file(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_killed_process_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from kdlab.engine.checkpoint import save_checkpoint
        save_checkpoint({{"step": 1, "w": torch.ones(1000)}}, {str(path)!r})
        def killed_save(obj, f, *a, **k):
            f.write(b"PK" + bytes(1000)); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = killed_save
        save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, {str(path)!r})
    """)
    # no short timeout: importing torch alone takes minutes on a loaded CI machine (pytest-timeout still applies)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    back = load_checkpoint_file(path)
    assert back["step"] == 1 and torch.equal(back["w"], torch.ones(1000))
    leftovers = [p for p in os.listdir(tmp_path) if p != "last.pt"]
    assert all(p.startswith(".last.pt.") and p.endswith(".tmp") for p in leftovers)


def test_missing_and_corrupt_files_give_one_line_errors(tmp_path):
    with pytest.raises(KdlabError, match="does not exist") as e:
        load_checkpoint_file(tmp_path / "nope.pt")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(KdlabError, match="unreadable or corrupt") as e:
        load_checkpoint_file(bad)
    assert "\n" not in str(e.value)
    good = save_checkpoint({"w": torch.ones(100)}, tmp_path / "trunc.pt")
    good.write_bytes(good.read_bytes()[:50])
    with pytest.raises(KdlabError, match="unreadable or corrupt"):
        load_checkpoint_file(good)


def test_write_text_atomic(tmp_path):
    p = write_text_atomic(tmp_path / "summary.json", '{"a": 1}\n')
    assert p.read_text() == '{"a": 1}\n'
