"""Inputs that used to end in a long traceback or a hang: each is now ONE line naming the key or file.

Seeds and other numbers torch/numpy cannot take, binary/unreadable/odd config files, YAML anchor
and alias bombs, and malformed Tiny-ImageNet ``val_annotations.txt`` lines (issue 12, item 6).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from test_data_tiny import write_tiny
from test_foundation_cli_errors import digits_cfg, one_error_line  # noqa: F401 - digits_cfg is a fixture

from kdlab.config import CONFIG_DIR, load_config, load_yaml, parse_overrides
from kdlab.data import build_dataset
from kdlab.engine.device import seed_everything
from kdlab.errors import KdlabError

# --- numbers torch / numpy cannot take --------------------------------------------------------


@pytest.mark.parametrize("override,expected", [
    ("train.seed=1e30", "train.seed=1000000000000000019884624838656 is out of range: a seed must be an "
                        "integer in [0, 2**32)"),
    ("train.seed=-1", "train.seed=-1 is out of range: a seed must be an integer in [0, 2**32)"),
    ("train.seed=4294967296", "train.seed=4294967296 is out of range"),
    ("data.split_seed=-3", "data.split_seed=-3 is out of range: a seed must be an integer in [0, 2**32)"),
    ("schedule.epochs=1e30", "schedule.epochs=1000000000000000019884624838656 is out of range: it must fit "
                             "a 64-bit integer"),
    ("schedule.milestones=[2,1e19]", "schedule.milestones[1]=10000000000000000000 is out of range"),
    ("optim.lr=.inf", "optim.lr=inf is out of range: it must be a finite number"),
    ("optim.grad_clip=.inf", "optim.grad_clip=inf is out of range: it must be a finite number"),
    ("method.params.nce_k=99999999999999999999", "method.params.nce_k=99999999999999999999 is out of range"),
    ("student.kwargs.widths=[8, .nan]", "student.kwargs.widths[1]=nan is out of range: it must be a finite"),
])
def test_numbers_beyond_what_torch_takes_are_one_line(digits_cfg, capsys, override, expected):  # noqa: F811
    assert expected in one_error_line(["train", str(digits_cfg), override], capsys)


def test_the_seed_bounds_are_what_the_seeding_accepts():
    cfg = load_config(None, [f"train.seed={2**32 - 1}", f"data.split_seed={2**32 - 1}"])
    seed_everything(cfg.train.seed)  # the largest seed accepted seeds python, numpy and torch
    assert torch.initial_seed() == 2**32 - 1
    with pytest.raises(ValueError):  # what train.seed=1e30 used to reach
        torch.manual_seed(int(1e30))


# --- config files that are no YAML text ---------------------------------------------------------


def test_a_binary_config_names_the_file(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(64)}, path)  # a zip: starts as ASCII, then binary
    line = one_error_line(["train", str(path)], capsys)
    assert str(path) in line and "is not a UTF-8 text file" in line and "offset" in line
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    line = one_error_line(["train", str(tmp_path / "latin1.yaml")], capsys)
    assert "latin1.yaml is not a UTF-8 text file (byte 0xe9 at offset 9)" in line


def test_a_directory_a_fifo_or_a_missing_base_is_one_line(tmp_path, capsys):
    line = one_error_line(["train", str(tmp_path)], capsys)
    assert f"config '{tmp_path}' is a directory" in line
    os.mkfifo(tmp_path / "pipe.yaml")  # reading it would block forever
    assert "is not a regular file" in one_error_line(["train", str(tmp_path / "pipe.yaml")], capsys)
    (tmp_path / "run.yaml").write_text("base: gone.yaml\nname: x\n")
    line = one_error_line(["train", str(tmp_path / "run.yaml")], capsys)
    assert f"config {tmp_path / 'gone.yaml'} (the base of {tmp_path / 'run.yaml'}) does not exist" in line
    (tmp_path / "sub").mkdir()
    (tmp_path / "run2.yaml").write_text("base: sub\n")
    assert "(the base of" in one_error_line(["train", str(tmp_path / "run2.yaml")], capsys)


def test_an_unreadable_or_huge_config_is_one_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    real = type(path).read_bytes

    def denied(self):
        if self.name == "c.yaml":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(type(path), "read_bytes", denied)  # chmod 000 does not stop root
    line = one_error_line(["train", str(path)], capsys)
    assert f"config {path} cannot be read: Permission denied" in line
    monkeypatch.undo()
    with open(tmp_path / "big.yaml", "wb") as f:
        f.truncate(3 << 20)  # sparse: no 3 MiB written
    assert "big.yaml is 3.0 MiB, not a config" in one_error_line(["train", str(tmp_path / "big.yaml")], capsys)


def test_a_utf8_bom_is_accepted(tmp_path):
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfname: with-bom\n")
    assert load_config(tmp_path / "bom.yaml").name == "with-bom"


# --- YAML anchors and aliases ---------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": each level lists the previous one 9 times (9^9 strings at the top)."""
    rows = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    rows += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(rows) + f"\nname: *a{levels - 1}\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 1024
    cpu = time.process_time()  # this process's CPU time: other jobs on the machine do not count
    line = one_error_line(["train", str(path)], capsys)
    assert time.process_time() - cpu < 1.0
    assert f"config {path.resolve()}: YAML anchors and aliases are not allowed" in line
    assert "(found &a0)" in line and "at line 1, column 5" in line


@pytest.mark.parametrize("value", ["[&a [1, 2], [*a, *a]]", "*undefined", "&x 3"])
def test_anchors_in_overrides_are_refused(value):
    with pytest.raises(KdlabError, match=r"^override 'method.params.x=.*': YAML anchors and aliases are not "
                                         r"allowed") as e:
        parse_overrides([f"method.params.x={value}"])
    assert "\n" not in str(e.value)
    assert parse_overrides(["data.root=*"]) == {"data": {"root": "*"}}  # not YAML: still taken as text


def test_no_shipped_recipe_uses_anchors():
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) > 100
    for path in files:
        load_yaml(path.read_text(encoding="utf-8"))  # raises on the first anchor or alias


# --- Tiny-ImageNet val_annotations.txt ----------------------------------------------------------


def _annotations(root, edit) -> None:
    path = root / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize("edit,expected", [
    (lambda ls: [*ls[:2], ls[2].split("\t")[0], *ls[3:]], "line 3 has no label"),
    (lambda ls: [*ls[:1], "\t".join(ls[1].split("\t")[:1] + ls[1].split("\t")[2:]), *ls[2:]],
     "line 2 labels val_4.JPEG as '0', which is not in wnids.txt (a number: is the wnid missing from the line?)"),
    (lambda ls: [*ls[:4], ls[4].replace("\tn", "\tm", 1), *ls[5:]], "line 5 labels val_1.JPEG as 'm"),
    (lambda ls: [*ls, ls[0]], "line 7 lists val_5.JPEG again (first on line 1)"),
    (lambda ls: [*ls, "val_99.JPEG\tn01443537\t0\t0\t63\t63"], "line 7 lists val_99.JPEG, but"),
])
def test_a_malformed_annotation_line_is_refused_with_its_number(tmp_path, edit, expected):
    root = write_tiny(tmp_path / "tiny", train=2, val=2)
    _annotations(root, edit)
    with pytest.raises(KdlabError) as e:
        build_dataset("tiny-imagenet", root, val_fraction=0)
    msg = str(e.value)
    assert "\n" not in msg and str(root / "val" / "val_annotations.txt") in msg and expected in msg, msg


def test_blank_annotation_lines_are_skipped_and_the_order_kept(tmp_path):
    root = write_tiny(tmp_path / "tiny", train=2, val=2)
    _annotations(root, lambda ls: ["", *ls[:3], "   ", *ls[3:], ""])
    data = build_dataset("tiny-imagenet", root, val_fraction=0, in_memory=False)
    names = [os.path.basename(p) for p in data.test.paths]
    assert names == sorted(names) and len(names) == 6


def test_a_binary_wnids_file_is_one_line(tmp_path):
    root = write_tiny(tmp_path / "tiny", train=1, val=1)
    (root / "wnids.txt").write_bytes(b"n01443537\n\xff\xfe\n")
    with pytest.raises(KdlabError, match=r"wnids.txt is not a UTF-8 text file \(bad byte at offset 10\)"):
        build_dataset("tiny-imagenet", root)


@pytest.mark.parametrize("override, key", [("data.on_bad_file=ignore", "data.on_bad_file"),
                                           ("data.decode=fpga", "data.decode"), ("data.prefetch=-1", "data.prefetch")])
def test_pipeline_keys_are_checked_when_the_config_loads(override, key):
    from kdlab.config import load_config

    with pytest.raises(KdlabError, match=f"^{key}=.* is out of range"):
        load_config(None, [override])
