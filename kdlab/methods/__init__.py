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
    hparams = {k: _checked_value(method, k, v, valid[k]) for k, v in hparams.items()}
    return cls(student, teacher, **hparams)


def _checked_value(method: str, key: str, value: Any, default: Any) -> Any:
    """``value`` fitted to the type of a bool / int / float default, or one clear error line.

    An int where a float is expected becomes a float; a string, a list or anything else where a
    number or a flag is expected is refused (e.g. an unquoted ``abc`` on the command line).
    """
    if value is None or default is None or default is inspect.Parameter.empty:
        return value
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, float):
        ok, want = isinstance(value, int | float) and not isinstance(value, bool), "a number"
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        return value
    if not ok:
        raise KdlabError(f"method {method!r}: hyper-parameter {key!r} must be {want} (default {default!r}), "
                         f"got {value!r}")
    return value


def list_methods() -> list[str]:
    _load_all()
    return METHODS.names()


def describe_method(name: str) -> str:
    """First line of the method's docstring."""
    doc = inspect.getdoc(method_class(name)) or ""
    return doc.splitlines()[0] if doc else ""
