"""Teacher weights by name from the local caches (never downloaded), and seed-format checkpoints.

Named weights: a real state dict saved under torchvision's / timm's file name in a temporary
TORCH_HOME or Hugging Face cache loads by name; a missing file is one line naming the file, the
folder and the URL. Checkpoints: files written in the exact layouts the seeds save (mdistiller and
CKD-SW ``student_best`` / ``best``, RepDistiller, ReviewKD, OFD, DataParallel, kuangliu's ``net``)
load into the zoo model.
"""

from __future__ import annotations

import pytest
import torch

import kdlab
from kdlab.cli import main
from kdlab.config import load_config
from kdlab.errors import KdlabError
from kdlab.experiment import build_model, check_config
from kdlab.models import load_checkpoint
from kdlab.models.weights import load_named_weights

# torchvision's published file names and URLs (torchvision/models/resnet.py)
R18_FILE = "resnet18-f37072fd.pth"
R18_URL = f"https://download.pytorch.org/models/{R18_FILE}"
R34_FILE = "resnet34-b627a593.pth"


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_torchvision_weights_load_by_name_from_the_hub_cache(torch_home):
    torch.manual_seed(1)
    source = kdlab.create_model("torchvision:resnet18", num_classes=1000)
    torch.save(source.state_dict(), torch_home / R18_FILE)
    model = kdlab.create_model("torchvision:resnet18", num_classes=1000)
    assert not _same(model, source)
    path = load_named_weights(model, "torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert path == torch_home / R18_FILE
    assert _same(model, source)
    # through the experiment's model builder, as a config's teacher.weights reaches it
    built = build_model("torchvision:resnet18", 1000, {}, None, "torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert _same(built, source)


def test_a_missing_torchvision_file_is_one_line_naming_file_folder_and_url(torch_home):
    model = kdlab.create_model("torchvision:resnet18", num_classes=1000)
    with pytest.raises(KdlabError) as e:
        load_named_weights(model, "torchvision:ResNet18_Weights.IMAGENET1K_V1")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"file {R18_FILE} is not in {torch_home}" in msg and R18_URL in msg and "never downloads" in msg


def test_weights_of_another_class_count_or_name_are_one_line(torch_home):
    torch.save(kdlab.create_model("torchvision:resnet18", num_classes=1000).state_dict(), torch_home / R18_FILE)
    small = kdlab.create_model("torchvision:resnet18", num_classes=10)
    with pytest.raises(KdlabError, match=r"do not fit ResNet: .*shape mismatches.*fc\.weight: \(1000, 512\) vs "
                                         r"\(10, 512\).*number of classes"):
        load_named_weights(small, "torchvision:ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(KdlabError, match="torchvision has no weights 'ResNet18_Weights.NOPE'"):
        load_named_weights(small, "torchvision:ResNet18_Weights.NOPE")
    with pytest.raises(KdlabError, match="must be 'torchvision:<Weights enum entry>'"):
        load_named_weights(small, "resnet18.pth")


def test_timm_weights_load_from_the_hugging_face_cache_or_the_hub_folder(tmp_path, torch_home, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(2)
    source = kdlab.create_model("timm:resnet18", num_classes=1000)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    # the Hugging Face cache layout: models--<org>--<name>/refs/main + snapshots/<commit>/<file>
    cache = tmp_path / "hf"
    repo = cache / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / "0123abcd" / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = kdlab.create_model("timm:resnet18", num_classes=1000)
    assert load_named_weights(model, "timm:resnet18.a1_in1k").name == "model.safetensors"
    assert _same(model, source)

    # no HF copy: timm's plain release URL, by its file name in the torch hub folder
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(KdlabError) as e:
        load_named_weights(model, "timm:resnet18.a1_in1k")
    msg = str(e.value)
    assert "\n" not in msg and "resnet18_a1_0-d63eafa0.pth" in msg and str(torch_home) in msg
    assert "huggingface.co/timm/resnet18.a1_in1k" in msg
    torch.save(state, torch_home / "resnet18_a1_0-d63eafa0.pth")
    other = kdlab.create_model("timm:resnet18", num_classes=1000)
    load_named_weights(other, "timm:resnet18.a1_in1k")
    assert _same(other, source)


def test_an_imagenet_recipe_without_the_teacher_file_fails_first_with_one_line(tmp_path, torch_home, capsys):
    code = main(["train", "imagenet/kd/resnet34_resnet18", f"out_dir={tmp_path}", "data.root=/nonexistent"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err  # the line names the spec, the file, the folder and the URL
    assert "'torchvision:ResNet34_Weights.IMAGENET1K_V1'" in err and R34_FILE in err and str(torch_home) in err
    assert f"https://download.pytorch.org/models/{R34_FILE}" in err
    # with the file in place the same config passes every check that needs no data
    torch.save({}, torch_home / R34_FILE)
    check_config(load_config("imagenet/kd/resnet34_resnet18"))


# ------------------------------------------------------------------------------------------------
# seed-format checkpoints


def _layouts(state: dict, teacher_state: dict) -> dict:
    mod = {f"module.{k}": v for k, v in state.items()}
    distiller = {**{f"module.student.{k}": v for k, v in state.items()},
                 **{f"module.teacher.{k}": v for k, v in teacher_state.items()}}
    review = {**{f"student.{k}": v for k, v in state.items()}, "abfs.0.conv1.0.weight": torch.zeros(4, 4, 1, 1)}
    return {
        "mdistiller student_best": {"model": state},
        "mdistiller/CKD-SW best (whole distiller, DataParallel)": {
            "epoch": 240, "model": distiller, "optimizer": {"state": {}, "param_groups": []}, "best_acc": 73.5},
        "RepDistiller": {"epoch": 240, "model": state, "best_acc": 70.1, "optimizer": {"state": {}}},
        "DataParallel raw": mod,
        "ReviewKD CIFAR (raw ReviewKD wrapper)": review,
        "ReviewKD ImageNet (state_dict of the DDP wrapper)": {
            "epoch": 100, "arch": "resnet18", "state_dict": {f"module.{k}": v for k, v in review.items()},
            "best_prec1": 71.6, "optimizer": {"state": {}}},
        "OFD ImageNet": {"epoch": 100, "arch": "resnet18", "state_dict": mod, "best_err1": 29.2,
                         "optimizer": {"state": {}}},
        "kuangliu pytorch-cifar": {"net": mod, "acc": 93.0, "epoch": 199},
    }


def test_teacher_checkpoints_in_the_seeds_layouts_load(tmp_path):
    torch.manual_seed(3)
    source = kdlab.create_model("resnet8", num_classes=10)
    teacher = kdlab.create_model("resnet14", num_classes=10)
    for i, (what, obj) in enumerate(_layouts(source.state_dict(), teacher.state_dict()).items()):
        path = tmp_path / f"ck{i}.pth"
        torch.save(obj, path)
        model = kdlab.create_model("resnet8", num_classes=10)
        meta = load_checkpoint(model, path)
        assert _same(model, source), what
        assert "model" not in meta and "state_dict" not in meta and "net" not in meta, what


def test_a_wrapper_that_is_not_a_distiller_is_not_silently_cut_down(tmp_path):
    source = kdlab.create_model("resnet8", num_classes=10)
    simkd_like = {**{f"student.{k}": v for k, v in source.state_dict().items()},
                  "projector.0.weight": torch.zeros(2, 2, 1, 1), "classifier.weight": torch.zeros(10, 64)}
    torch.save({"model": simkd_like}, tmp_path / "simkd.pth")
    with pytest.raises(KdlabError, match="does not fit .*unexpected keys"):
        load_checkpoint(kdlab.create_model("resnet8", num_classes=10), tmp_path / "simkd.pth")


def test_teacher_weights_reach_the_teacher_of_a_built_experiment(tmp_path, torch_home):
    from PIL import Image

    from kdlab.experiment import build_experiment

    rng = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 2)):
        for c in ("n01", "n02"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (40, 48, 3), generator=rng, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / "data" / split / c / f"{c}_{i}.JPEG")
    # a 2-class "pretrained" teacher saved under torchvision's file name (the folder has 2 classes)
    torch.manual_seed(4)
    source = kdlab.create_model("torchvision:resnet34", num_classes=2)
    torch.save(source.state_dict(), torch_home / R34_FILE)
    cfg = load_config("imagenet/kd/resnet34_resnet18", [f"data.root={tmp_path / 'data'}", "data.val_fraction=0.5",
                                                       "data.image_size=32", "data.num_workers=0",
                                                       f"out_dir={tmp_path / 'runs'}", "train.device=cpu"])
    exp = build_experiment(cfg)
    assert _same(exp.distiller.teacher, source)
    assert exp.data.num_classes == 2 and not exp.distiller.teacher.training
