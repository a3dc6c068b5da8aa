"""Config loading: YAML + base inheritance + overrides, typed conversion, clear errors."""

import pytest

from kdlab.config import Config, from_dict, list_configs, load_config, parse_overrides, resolve_config_path
from kdlab.errors import KdlabError


def test_overrides_parse_nested_and_typed():
    got = parse_overrides(["optim.lr=0.01", "schedule.milestones=[1,2]", "train.compile=true", "name=x"])
    assert got == {"optim": {"lr": 0.01}, "schedule": {"milestones": [1, 2]}, "train": {"compile": True},
                   "name": "x"}


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.1, weight_decay: 1.0e-4}\nschedule: {epochs: 10}\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\noptim: {lr: 0.2}\nstudent: {name: resnet8}\n")
    cfg = load_config(tmp_path / "run.yaml", ["optim.lr=0.3"])
    assert cfg.optim.lr == 0.3 and cfg.optim.weight_decay == 1e-4 and cfg.schedule.epochs == 10
    assert cfg.student.name == "resnet8"


def test_unknown_key_names_the_nearest_valid_key():
    with pytest.raises(KdlabError, match=r"unknown config key 'optim.lrr'; did you mean 'optim.lr'"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(KdlabError, match=r"did you mean 'schedule'"):
        load_config(None, ["schedul.epochs=3"])


def test_bad_value_types_are_rejected():
    with pytest.raises(KdlabError, match="schedule.epochs must be an integer"):
        load_config(None, ["schedule.epochs=ten"])
    with pytest.raises(KdlabError, match="train.compile must be true or false"):
        load_config(None, ["train.compile=3"])
    # ints are accepted where floats are expected, and integral floats where ints are
    cfg = from_dict(Config, {"optim": {"lr": 1}, "schedule": {"epochs": 5.0}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.schedule.epochs == 5


def test_missing_config_suggests_a_shipped_recipe():
    with pytest.raises(KdlabError, match="cifar100/kd/resnet32x4_resnet8x4"):
        resolve_config_path("cifar100/kd/resnet32x4_resnet8x")


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("cifar100/dkd/resnet32x4_resnet8x4")
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "c.yaml") == cfg


def test_yaml_errors_are_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim: [unclosed\n")
    with pytest.raises(KdlabError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(KdlabError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


def test_shipped_recipes_cover_the_standard_pairs():
    names = set(list_configs())
    pairs = ["resnet56_resnet20", "resnet110_resnet32", "resnet32x4_resnet8x4", "wrn_40_2_wrn_16_2",
             "wrn_40_2_wrn_40_1", "vgg13_vgg8", "resnet32x4_ShuffleV1", "wrn_40_2_ShuffleV1",
             "vgg13_MobileNetV2", "ResNet50_MobileNetV2", "resnet32x4_ShuffleV2"]
    for method in ("kd", "dkd"):
        for p in pairs:
            assert f"cifar100/{method}/{p}" in names
    for t in ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"):
        assert f"cifar100/ce/{t}" in names
    for ds in ("tiny-imagenet", "cifar10"):
        assert any(n.startswith(f"{ds}/ce/") for n in names)
        assert any(n.startswith(f"{ds}/kd/") for n in names)
        assert any(n.startswith(f"{ds}/dkd/") for n in names)


def test_dkd_recipes_carry_the_per_pair_beta():
    assert load_config("cifar100/dkd/resnet56_resnet20").method.params["beta"] == 2.0
    assert load_config("cifar100/dkd/wrn_40_2_wrn_16_2").method.params["beta"] == 6.0
    assert load_config("cifar100/dkd/resnet32x4_ShuffleV2").method.params["beta"] == 8.0
    shuffle = load_config("cifar100/kd/resnet32x4_ShuffleV1")
    assert shuffle.optim.lr == 0.01 and shuffle.schedule.milestones == [150, 180, 210]


def test_every_shipped_recipe_is_consistent():
    """Each recipe loads, names a known method, models and hyper-parameters, and a distillation
    recipe's teacher checkpoint is exactly where the shipped teacher recipe writes it."""
    from kdlab.data import list_datasets
    from kdlab.methods import _checked_value, method_class, method_defaults
    from kdlab.models import check_model_name

    configs = {n: load_config(n) for n in list_configs()}
    # detection recipes have their own checks (tests/test_detection_recipes.py)
    configs = {n: c for n, c in configs.items() if getattr(method_class(c.method.name), "task", "") != "detection"}
    produced = {f"runs/{c.name}/checkpoints/best.pt": c.student.name for c in configs.values()
                if c.method.name == "ce"}
    assert len(configs) > 300
    for name, cfg in configs.items():
        cls = method_class(cfg.method.name)
        valid = method_defaults(cfg.method.name)
        assert set(cfg.method.params) <= set(valid), name
        check_model_name(cfg.student.name)
        assert cfg.data.dataset in list_datasets(), name
        assert name.split("/")[1].startswith(cfg.method.name) or cfg.method.name == "compose", name
        if cls.uses_teacher:
            check_model_name(cfg.teacher.name)
            ck = cfg.teacher.checkpoint
            assert ck or cfg.teacher.weights, f"{name}: no teacher checkpoint or named weights"
            if ck and ck.startswith("runs/"):
                assert produced.get(ck) == cfg.teacher.name, f"{name}: no shipped recipe trains {ck}"
        parts = [(cfg.method.name, cfg.method.params)]
        if cfg.method.name == "compose":
            parts += [(t["method"], t.get("params") or {}) for t in cfg.method.params["terms"]]
        for method, params in parts:  # every value has the type its method expects
            defaults = method_defaults(method)
            for key, value in params.items():
                _checked_value(method, key, value, defaults[key])


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method:\n  name: vitkd\n  params: {alpha_vitkd: 3e-05, beta_vitkd: 1E+2}\noptim: {lr: 5e-2}\n")
    cfg = load_config(path, ["method.params.lambda_vitkd=5e-1"])
    assert cfg.method.params == {"alpha_vitkd": 3e-05, "beta_vitkd": 100.0, "lambda_vitkd": 0.5}
    assert cfg.optim.lr == 0.05


def test_a_hyper_parameter_of_the_wrong_type_is_one_line():
    import kdlab

    student = kdlab.create_model("resnet8", num_classes=10)
    teacher = kdlab.create_model("resnet8", num_classes=10)
    with pytest.raises(KdlabError, match="hyper-parameter 'temperature' must be a number .*got 'abc'"):
        kdlab.create_distiller("kd", student=student, teacher=teacher, temperature="abc")
    with pytest.raises(KdlabError, match="'warmup_epochs' must be an integer"):
        kdlab.create_distiller("dkd", student=student, teacher=teacher, warmup_epochs=2.5)
    d = kdlab.create_distiller("kd", student=student, teacher=teacher, temperature=2)
    assert isinstance(d.temperature, float) and d.temperature == 2.0


def test_overrides_apply_in_order_so_null_clears_what_came_before():
    base = "cifar100/comparative/resnet110_resnet32_n4000"
    assert load_config(base).method.params["pos_and_neg"] == 3
    cfg = load_config(base, ["method.name=kd", "method.params=null", "method.params.temperature=2"])
    assert cfg.method.params == {"temperature": 2}
    cfg = load_config(base, ["method.params.temperature=2", "method.params=null"])
    assert cfg.method.params == {}


@pytest.mark.parametrize("override,message", [
    ("schedule.epochs=-2", "schedule.epochs=-2 is out of range: it must be >= 1"),
    ("optim.momentum=-1", "optim.momentum=-1.0 is out of range: it must be in [0, 1)"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1.0 is out of range"),
    ("schedule.milestones=[300,100]", "increasing order"),
    ("schedule.min_lr=2", "must be <= optim.lr (0.05)"),
    ("data.cache_view=foo", "one of augmented, clean"),
    ("train.max_steps=-1", ">= 1 (or null)"),
    ("train.eval_every=0", "train.eval_every=0 is out of range"),
    ("data.val_fraction=1", "in [0, 1)"),
    ("optim.grad_clip=-1", "> 0 (or null for no clipping)"),
    ("schedule.warmup_epochs=300", "<= schedule.epochs (240)"),
])
def test_values_out_of_range_are_one_line_at_load_time(override, message):
    with pytest.raises(KdlabError) as err:
        load_config("cifar100/kd/resnet32x4_resnet8x4", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_yaml_errors_say_where_and_duplicate_keys_are_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ndata: [digits, 1\nstudent: {name: resnet8}\n")
    with pytest.raises(KdlabError, match=r"not valid YAML: .* at line \d+, column \d+"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "dup.yaml").write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(KdlabError, match=r"duplicate key 'lr' at line 3, column 3"):
        load_config(tmp_path / "dup.yaml")
