"""The few-sample CIFAR-100 recipes: one method-neutral recipe, and every config built on it builds its
distiller on its named pair (random weights) and gives finite losses on a tiny CIFAR-size batch.

Loading, method/model names, hyper-parameter types and teacher-checkpoint paths of every shipped recipe
are checked in test_config.py (``test_every_shipped_recipe_is_consistent``); this file checks what that
one does not: the shared recipe, the CompKD weights of the new baselines, and a forward through each.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch

import kdlab
from kdlab import losses
from kdlab.config import CONFIG_DIR, MethodConfig, list_configs, load_config, load_yaml
from kdlab.data.batch import Batch
from kdlab.data.tuples import tuple_split
from kdlab.errors import KdlabError
from kdlab.experiment import build_model, check_config, method_params

RECIPE = "cifar100/few_sample/_recipe"
DIRS = ("few_sample", "comparative", "mixup", "mixup3", "cutmix")
NAMES = [n for n in list_configs() if n.split("/")[0] == "cifar100" and n.split("/")[1] in DIRS]
PAIRS = [("resnet110", "resnet32"), ("vgg13", "vgg8"), ("wrn_40_2", "wrn_16_2")]
DATA = SimpleNamespace(image_size=(32, 32), train=range(3200), num_classes=100)  # what method_params reads


def test_the_few_sample_configs_are_all_there():
    names = set(NAMES)
    for t, s in PAIRS:
        for m in ("mixup", "mixup3", "cutmix"):
            assert f"cifar100/{m}/{t}_{s}_n4000" in names
        assert f"cifar100/few_sample/dist_{t}_{s}_n4000" in names
        for n in (2000, 3000, 4000, 5000, 6000):
            assert f"cifar100/comparative/{t}_{s}_n{n}" in names


def test_the_recipe_is_method_neutral_and_shared_by_every_few_sample_config():
    raw = load_yaml((CONFIG_DIR / f"{RECIPE}.yaml").read_text())
    assert "method" not in raw and set(raw) == {"base", "data", "optim", "schedule", "train"}
    recipe = load_config(RECIPE)
    assert recipe.method == MethodConfig()  # nothing set: the kdlab default
    assert (recipe.data.subset_size, recipe.data.val_fraction, recipe.data.cache_teacher) == (4000, 0.2, True)
    assert (recipe.schedule.name, recipe.train.early_stop_patience, recipe.train.plateau_lr_drops) == (
        "constant", 50, 2)
    few = [n for n in NAMES if re.search(r"_n\d+$", n)]
    assert len(few) >= 27
    for name in few:
        cfg = load_config(name)
        assert (cfg.optim, cfg.schedule, cfg.train) == (recipe.optim, recipe.schedule, recipe.train), name
        n = int(re.search(r"_n(\d+)$", name).group(1))
        assert cfg.data.subset_size == n, name
        cfg.data.subset_size = recipe.data.subset_size
        assert cfg.data == recipe.data, name


def _checked(cfg, tmp_path):
    """``check_config`` (names, hyper-parameters, loader, cache) with a stand-in teacher checkpoint file."""
    if cfg.teacher.name:
        (tmp_path / "teacher.pt").touch()
        cfg.teacher.checkpoint = str(tmp_path / "teacher.pt")
    check_config(cfg)


def test_switching_method_on_a_comparative_config_needs_params_null(tmp_path):
    """What the recipe's comment tells users: inherited params merge, ``method.params=null`` clears them."""
    spec = "cifar100/comparative/resnet110_resnet32_n4000"
    kept = load_config(spec, ["method.name=kd"])
    assert kept.method.params["pos_and_neg"] == 3
    with pytest.raises(KdlabError, match="method 'kd' has no hyper-parameter 'pos_and_neg'"):
        _checked(kept, tmp_path)
    assert load_config(spec, ["method.name=kd", "method.params={}"]).method.params == kept.method.params
    cleared = load_config(spec, ["method.name=kd", "method.params=null"])
    assert cleared.method == MethodConfig(name="kd", params={})
    _checked(cleared, tmp_path)
    direct = load_config(RECIPE, ["method.name=kd", "student.name=resnet32", "teacher.name=resnet110"])
    _checked(direct, tmp_path)


@pytest.mark.parametrize("method", ["mixup", "mixup3", "cutmix"])
def test_mixing_baselines_carry_compkds_weights(method):
    for t, s in PAIRS:
        p = load_config(f"cifar100/{method}/{t}_{s}_n4000").method.params
        assert (p["w_cls"], p["w_rel"], p["w_kd"], p["loss_fn"]) == (1.0, 1.0, 0.0, "ce")
        assert (p["sampling"], p["max_pairs"]) == ("pool", 100_000)  # CompKD's precomputed source tuples


def _batch(cfg, distiller, n=4):
    g = torch.Generator().manual_seed(0)
    if cfg.method.name == "comparative":  # one tuple: P positives then Q negatives
        pos, neg = tuple_split(distiller.pos_and_neg)
        x = torch.randn(pos + neg, 3, 32, 32, generator=g)
        y = torch.tensor([7] * pos + [3] * neg)
        return Batch(x, y, extra={"tuple_split": torch.tensor([pos, neg])})
    if getattr(distiller, "sampling", "batch") == "pool":  # two source tuples, rows t·k + j
        k = distiller.sources
        tuples = torch.arange(2 * k).reshape(2, k)
        return Batch(torch.randn(2 * k, 3, 32, 32, generator=g), torch.randint(0, 100, (2 * k,), generator=g),
                     extra={"tuples": tuples})
    return Batch(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 100, (n,), generator=g))


@pytest.mark.parametrize("name", NAMES)
def test_each_config_builds_its_distiller_and_gives_finite_losses(name, tmp_path):
    cfg = load_config(name)
    _checked(cfg, tmp_path)  # incl. data.cache_teacher: the method reads teacher logits only
    torch.manual_seed(0)
    student = build_model(cfg.student.name, 100, cfg.student.kwargs, None)
    teacher = build_model(cfg.teacher.name, 100, cfg.teacher.kwargs, None)
    d = kdlab.create_distiller(cfg.method.name, student=student, teacher=teacher,
                               **method_params(cfg, DATA)).train()
    batch = _batch(cfg, d)
    logits, terms = d(batch)
    assert logits.shape == (batch.image.shape[0], 100)
    assert terms and all(math.isfinite(v.item()) for v in terms.values()), terms
    assert sum(terms.values()).requires_grad
    if cfg.method.name == "compose":  # CompKD's DIST: 1 x CE + 1 x KD(T=4) + 2 x DIST(tau 4)
        with torch.no_grad():
            zt = teacher(batch.image)
        z, y = logits.detach(), batch.target
        assert set(terms) == {"ce", "kd.kd", "dist.dist"}
        assert terms["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(z, y).item(), rel=1e-5)
        assert terms["kd.kd"].item() == pytest.approx(losses.kd(z, zt, 4.0).item(), rel=1e-5)
        assert terms["dist.dist"].item() == pytest.approx(2 * losses.dist(z, zt, 1.0, 1.0, 4.0).item(), rel=1e-5)
    elif cfg.method.name == "comparative":
        assert set(terms) == {"cls", "rel"}
    else:
        assert set(terms) == {"ce", "rel"}
