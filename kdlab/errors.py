"""User-facing errors: one clear line saying what was wrong and what to do.

Every error a user can cause by bad input (an unknown name, a missing dataset, a wrong
checkpoint, a bad config key) is raised as :class:`KdlabError`. The CLI prints its message on
one line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KdlabError(ValueError):
    """An error caused by the user's input; its message is meant to be shown as is."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` valid names closest to ``name`` (case-insensitive)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def unknown(kind: str, name: str, choices: Iterable[str]) -> KdlabError:
    """Build the standard 'unknown X' error with the nearest valid names."""
    choices = sorted(choices)
    near = closest(name, choices)
    hint = f"did you mean {', '.join(repr(c) for c in near)}?" if near else f"valid: {', '.join(choices)}"
    return KdlabError(f"unknown {kind} {name!r}; {hint}")
