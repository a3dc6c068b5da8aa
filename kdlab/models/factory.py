"""``create_model`` and ``list_models``: one entry point for the zoo and the external libraries."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from kdlab.errors import KdlabError, closest
from kdlab.models.external import PREFIXES, create_external, is_external
from kdlab.models.registry import MODELS


def list_models() -> list[str]:
    """Names of the registered zoo models (sorted).

    torchvision and timm models are not listed; any of them is available as
    ``"torchvision:<name>"`` / ``"timm:<name>"``.
    """
    return MODELS.names()


def _check_kwargs(name: str, factory: Any, kw: dict[str, Any]) -> None:
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p != "num_classes"]
    for key in kw:
        if key not in valid:
            near = closest(key, valid)
            hint = (f"did you mean {', '.join(map(repr, near))}?" if near
                    else f"valid: {', '.join(valid) if valid else 'none besides num_classes'}")
            raise KdlabError(f"model {name!r} takes no argument {key!r}; {hint}")


def _zoo_factory(name: str) -> Any:
    try:
        return MODELS.get(name)
    except KdlabError as e:
        prefixes = " or ".join(PREFIXES)
        raise KdlabError(f"{e} (torchvision/timm models: prefix the name with {prefixes})") from None


def check_model_name(name: str) -> None:
    """Raise the same one-line error as :func:`create_model` for an unknown zoo name, cheaply."""
    if not is_external(name):
        _zoo_factory(name)


def create_model(name: str, num_classes: int = 100, **kw: Any) -> nn.Module:
    """Build a model by name, with its feature taps set (``model.taps``).

    ``name`` is a zoo name (see :func:`list_models`) or ``"torchvision:<name>"`` /
    ``"timm:<name>"``. ``kw`` are model options, e.g. ``shortcut="A"`` for the CIFAR ResNets or
    ``pretrained=True`` for external models. Unknown names and options raise :class:`KdlabError`.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise KdlabError(f"num_classes must be a positive integer, got {num_classes!r}")
    if is_external(name):
        return create_external(name, num_classes, **kw)
    factory = _zoo_factory(name)
    if num_classes == 0:
        raise KdlabError(f"num_classes must be a positive integer, got {num_classes!r}")
    _check_kwargs(name, factory, kw)
    return factory(num_classes, **kw)
