"""The init phase of AB, FT and FSP through the Trainer (tiny zoo nets on 8-px fake images)."""

from __future__ import annotations

import pytest
import torch
from test_engine_trainer import NUM_CLASSES, events, make_cfg, run

import kdlab
from kdlab.engine.checkpoint import load_checkpoint_file

pytestmark = pytest.mark.usefixtures("no_fsync")

# (method, teacher, what the init phase trains besides/instead of the student's features)
CASES = [("ab", "wrn_16_2"), ("fsp", "resnet14"), ("ft", "wrn_16_2")]


def _state(module, prefix=""):
    return {prefix + k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize("method,teacher", CASES)
def test_init_phase_then_main_phase(tmp_path, method, teacher):
    torch.manual_seed(0)
    s = kdlab.create_model("resnet8", num_classes=NUM_CLASSES)
    t = kdlab.create_model(teacher, num_classes=NUM_CLASSES)
    d = kdlab.create_distiller(method, student=s, teacher=t, init_epochs=2, init_lr=0.05, image_size=8)
    start = {k: v.detach().clone() for k, v in d.named_parameters()}
    bn_stats = s.bn1.running_mean.clone()
    init_ids = {id(p) for p in d.init_parameters()}
    init_names = {n for n, p in d.named_parameters() if id(p) in init_ids}
    cfg = make_cfg()
    cfg.schedule.epochs, cfg.schedule.warmup_epochs = 1, 0
    run(tmp_path, method, cfg, d, test=False)

    assert [e["epoch"] for e in events(tmp_path / method) if e.get("event") == "init"] == [1, 2]
    after_init = load_checkpoint_file(tmp_path / method / "checkpoints" / "init.pt")["distiller"]
    changed = {n for n in start if not n.startswith("teacher.") and not torch.equal(start[n], after_init[n])}
    assert changed and changed <= init_names, f"init phase touched {sorted(changed - init_names)[:3]}"
    assert not any(n.startswith("student.fc") for n in changed)  # the classifier is not in the init phase
    if method == "ft":
        assert all(n.startswith("paraphraser.") for n in changed)
        assert torch.equal(after_init["student.bn1.running_mean"], bn_stats)  # student in eval mode
    else:
        assert any(n.startswith("student.") for n in changed)
    if method == "ab":
        assert any(n.startswith("connectors.") for n in changed)

    final = dict(d.named_parameters())
    for n, v in after_init.items():
        if n.startswith(("connectors.", "paraphraser.")) and n in final:
            assert torch.equal(final[n].detach(), v), f"{n} moved in the main phase"
    assert not torch.equal(final["student.fc.weight"].detach(), after_init["student.fc.weight"])
    for n, p in t.named_parameters():
        assert torch.equal(p, start[f"teacher.{n}"])
