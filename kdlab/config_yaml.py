"""Reading config files: PyYAML's safe loader with YAML 1.2 floats, no duplicate keys, no anchors.

:func:`read_config_text` turns a path into text or one :class:`~kdlab.errors.KdlabError` line (a
directory, a missing ``base:``, a binary or oversized file); :func:`load_yaml` parses it and
:func:`yaml_problem` shortens PyYAML's several-line messages to ``<problem> at line L, column C``.
:mod:`kdlab.config` builds the typed config from what these return.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from kdlab.errors import KdlabError


class YamlAliasError(yaml.composer.ComposerError):
    """A YAML anchor (``&name``) or alias (``*name``) in a config or an override: both are refused."""


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 floats: ``1e-3`` and ``3e-05`` are numbers, not strings.

    (YAML 1.1, which PyYAML follows, wants a dot and a signed exponent, ``1.0e-3``; hyper-parameters
    such as ``alpha: 3e-5`` would otherwise reach a method as the string ``'3e-5'``.)

    Anchors and aliases (``&a``, ``*a``) are refused where the parser meets the first one
    (:class:`YamlAliasError`): a 1 KB "billion laughs" file of nested aliases expands to 10^9 values
    once anything walks it, and configs share settings through ``base:`` instead.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
            raise YamlAliasError(None, None, f"YAML anchors and aliases are not allowed in kdlab configs (found "
                                 f"{sign}{event.anchor}); write the value out, or share settings with 'base:'",
                                 event.start_mark)
        return super().compose_node(parent, index)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _no_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            lambda loader, node: _no_duplicate_keys(loader, node, deep=True))


def yaml_problem(e: yaml.YAMLError) -> str:
    """``<problem> at line L, column C`` from a PyYAML error (its message spans several lines)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_YamlLoader` (safe, YAML 1.2 floats)."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


MAX_CONFIG_BYTES = 1 << 20  # a config is a few lines; anything bigger is some other file given by mistake


def read_config_text(path: Path, via: Path | None = None) -> str:
    """The text of config file ``path`` (UTF-8), or one :class:`KdlabError` line saying why it cannot be read.

    ``via``: the config whose ``base:`` names ``path`` (said in the message).
    """
    named = f"config {path}" + (f" (the base of {via})" if via is not None else "")
    try:
        if path.is_dir():
            raise KdlabError(f"{named} is a directory; give a YAML file")
        if path.exists() and not path.is_file():
            raise KdlabError(f"{named} is not a regular file; give a YAML file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise KdlabError(f"{named} is {size / 2**20:.1f} MiB, not a config; a config is a small YAML text file "
                             f"(at most {MAX_CONFIG_BYTES >> 20} MiB)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise KdlabError(f"{named} does not exist") from None
    except OSError as e:
        raise KdlabError(f"{named} cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KdlabError(f"{named} is not a UTF-8 text file (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "a config must be YAML text") from None
