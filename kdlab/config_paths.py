"""Where shipped YAML files live and how a name given on the command line finds one.

``kdlab/configs/<dataset>/<method>/<pair>.yaml`` holds the recipes; grids and sweep spaces have
their own folders. A spec is a file path, or a shipped name without the folder or ``.yaml``; a
name that matches nothing gets one line with the nearest names.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.errors import KdlabError, closest

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

__all__ = ["CONFIG_DIR", "list_configs", "resolve_config_path", "resolve_shipped", "shipped_yaml"]


def shipped_yaml(spec: str | Path, folder: Path) -> Path | None:
    """``spec`` when it is a file, else ``folder/spec`` or ``folder/spec.yaml`` (a shipped name), else None."""
    p = Path(spec)
    if p.is_file():
        return p
    for cand in (folder / p, folder / f"{spec}.yaml"):
        if cand.is_file():
            return cand
    return None


def resolve_shipped(spec: str | Path, folder: Path, what: str, noun: str) -> Path:
    """``spec`` as a file or a name shipped in ``folder``; otherwise one line with the nearest names
    (``what``: how the spec is called, ``noun``: what the folder ships, e.g. "grid")."""
    found = shipped_yaml(spec, folder)
    if found is not None:
        return found
    names = sorted(q.stem for q in folder.glob("*.yaml"))
    near = closest(str(spec), names)
    hint = f"did you mean {', '.join(near)}?" if near else f"shipped {noun}s: {', '.join(names)}"
    raise KdlabError(f"{what} {str(spec)!r} is neither a file nor a shipped {noun}; {hint}")


def resolve_config_path(spec: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped recipe (``cifar100/kd/resnet32x4_resnet8x4``)."""
    found = shipped_yaml(spec, CONFIG_DIR)
    if found is not None:
        return found
    p = Path(spec)
    if p.is_dir():
        raise KdlabError(f"config {str(spec)!r} is a directory; give a YAML file or a shipped recipe name "
                         "(`kdlab list configs`)")
    if p.exists():  # neither a regular file nor a directory (a device, a FIFO...)
        raise KdlabError(f"config {str(spec)!r} is not a regular file; give a YAML file")
    names = list_configs()
    near = closest(str(spec), names)
    hint = f"did you mean {', '.join(near)}?" if near else "see `kdlab list configs`"
    raise KdlabError(f"config {str(spec)!r} is neither a file nor a shipped recipe; {hint}")


def list_configs() -> list[str]:
    """Names of the shipped recipes, relative to the config directory, without ``.yaml``."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml")
                  if not p.name.startswith("_"))
