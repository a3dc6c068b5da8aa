"""Distillation methods: one file per method, registered by name; this module finds them all.

Every module in this package (except ``base``, ``registry`` and ``modules/``) is imported on first
use, so adding a method means adding one file with a ``@register_method`` class.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from torch import nn

from kdlab.errors import KdlabError, closest
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.registry import METHODS, register_method

__all__ = ["Distiller", "Needs", "METHODS", "register_method", "create_distiller", "list_methods",
           "method_class", "method_defaults"]

_LOADED = False
_SKIP = {"base", "registry", "modules"}


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _LOADED = True


def method_class(name: str) -> type[Distiller]:
    _load_all()
    return METHODS.get(name)


def method_defaults(name: str) -> dict[str, Any]:
    """The method's hyper-parameters and their defaults (keyword-only ``__init__`` arguments)."""
    sig = inspect.signature(method_class(name).__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def create_distiller(method: str, *, student: nn.Module, teacher: nn.Module | None = None,
                     **hparams: Any) -> Distiller:
    """Build a registered method around ``student`` (and ``teacher``) with its hyper-parameters.

    Unknown hyper-parameters are rejected with the nearest valid name.
    """
    cls = method_class(method)
    valid = method_defaults(method)
    for key in hparams:
        if key not in valid:
            near = closest(key, valid, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid: {', '.join(valid) or 'none'}"
            raise KdlabError(f"method {method!r} has no hyper-parameter {key!r}; {hint}")
    return cls(student, teacher, **hparams)


def list_methods() -> list[str]:
    _load_all()
    return METHODS.names()


def describe_method(name: str) -> str:
    """First line of the method's docstring."""
    doc = inspect.getdoc(method_class(name)) or ""
    return doc.splitlines()[0] if doc else ""
