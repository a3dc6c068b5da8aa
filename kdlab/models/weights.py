"""Pretrained weights by name, from the local caches only: ``model.weights`` in a config.

``teacher.weights=torchvision:ResNet34_Weights.IMAGENET1K_V1`` names a torchvision weights enum
entry; its file (``resnet34-b627a593.pth``) is read from ``torch.hub.get_dir()/checkpoints/``,
where ``torchvision`` itself caches it. ``teacher.weights=timm:resnet34.a1_in1k`` names a timm
pretrained tag; its file is read from the Hugging Face cache (``model.safetensors`` or
``pytorch_model.bin`` of the hub repo timm publishes it under) or, for tags that also have a plain
URL, from the torch hub folder under the URL's file name. Nothing is ever downloaded here: a
training run must not depend on the network. When the file is missing, one line names the exact
file, the folder to put it in and the URL it comes from.

The weights are loaded strictly (every key, every shape; the model must be built with the weights'
number of classes, 1000 for ImageNet) with the same one-line mismatch report as
:func:`kdlab.models.load_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.errors import KdlabError
from kdlab.models.checkpoint import _listing, _mismatch_report, _unwrap, split_checkpoint, strip_prefixes
from kdlab.safe_load import safe_load

WEIGHT_PREFIXES = ("torchvision:", "timm:")
HF_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_checkpoint_dir() -> Path:
    """Where torch hub (and torchvision) cache downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _split(spec: str) -> tuple[str, str]:
    lib, _, name = spec.partition(":")
    if lib + ":" not in WEIGHT_PREFIXES or not name:
        raise KdlabError(f"weights {spec!r} must be 'torchvision:<Weights enum entry>' (e.g. "
                         "torchvision:ResNet34_Weights.IMAGENET1K_V1) or 'timm:<model.tag>' (e.g. "
                         "timm:resnet34.a1_in1k); for a checkpoint file use <role>.checkpoint")
    return lib, name


def _torchvision_file(name: str, spec: str) -> Path:
    import torchvision

    try:
        entry = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError) as e:
        raise KdlabError(f"weights {spec!r}: torchvision has no weights {name!r} ({e}); e.g. "
                         "ResNet34_Weights.IMAGENET1K_V1 (see torchvision.models.get_model_weights)") from None
    url = entry.url
    folder = hub_checkpoint_dir()
    path = folder / Path(url).name
    if not path.is_file():
        raise KdlabError(f"weights {spec!r}: file {path.name} is not in {folder} (kdlab never downloads "
                         f"weights); download {url} into that folder, or set TORCH_HOME to where it is")
    return path


def _timm_file(name: str, spec: str) -> Path:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise KdlabError(f"weights {spec!r}: timm has no pretrained tag {name!r} "
                         "(see timm.list_pretrained())")
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        for fname in HF_FILES:
            found = try_to_load_from_cache(hub_id, fname, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = getattr(cfg, "url", None)
    folder = hub_checkpoint_dir()
    if url:
        path = folder / Path(url).name
        if path.is_file():
            return path
    where = [f"download {url} into {folder} (file {Path(url).name})"] if url else []
    if hub_id:
        where.append(f"put model.safetensors of https://huggingface.co/{hub_id} in the Hugging Face cache "
                     f"(`huggingface-cli download {hub_id} model.safetensors`)")
    if not where:
        raise KdlabError(f"weights {spec!r}: timm gives no file or URL for this tag")
    raise KdlabError(f"weights {spec!r}: not in the local caches (kdlab never downloads weights); "
                     + " or ".join(where))


def weights_file(spec: str) -> Path:
    """The local file holding the named weights; one-line :class:`KdlabError` when it is missing."""
    lib, name = _split(spec)
    return _torchvision_file(name, spec) if lib == "torchvision" else _timm_file(name, spec)


def read_state(path: Path) -> dict[str, Tensor]:
    """The state dict in a ``.safetensors`` or torch-pickled weights file (tensors only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as e:
            raise KdlabError(f"could not read weights file {path}: {type(e).__name__}: {e}") from None
    else:
        obj = safe_load(path)  # weights_only: never runs code
    state, _ = split_checkpoint(obj, f"weights file {path}")
    return strip_prefixes(state)


def load_named_weights(model: nn.Module, spec: str) -> Path:
    """Load the named pretrained weights into ``model`` (strictly); return the file they came from."""
    path = weights_file(spec)
    state = read_state(path)
    target = _unwrap(model)
    missing, unexpected, shapes = _mismatch_report(target, state)
    if missing or unexpected or shapes:
        report = "; ".join([_listing("missing keys", missing), _listing("unexpected keys", unexpected),
                            _listing("shape mismatches (file vs model)", shapes)])
        raise KdlabError(f"weights {spec!r} ({path.name}) do not fit {type(target).__name__}: {report}; "
                         "build the model with the weights' architecture and number of classes")
    target.load_state_dict(state, strict=True)
    return path
