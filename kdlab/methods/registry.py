"""The method registry: ``@register_method("name", paper=...)`` on a Distiller subclass."""

from __future__ import annotations

from collections.abc import Callable

from kdlab.registry import Registry

METHODS: Registry[type] = Registry("method")


def register_method(name: str, *, paper: str = "") -> Callable[[type], type]:
    """Register a :class:`~kdlab.methods.base.Distiller` subclass under ``name``.

    The first line of the class docstring is the one-line description shown by
    ``kdlab list methods``; ``paper`` is the citation shown beside it.
    """

    def add(cls: type) -> type:
        cls.method_name = name
        cls.paper = paper
        return METHODS.register(name)(cls)

    return add
