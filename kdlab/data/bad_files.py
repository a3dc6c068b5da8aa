"""Unreadable image files (truncated JPEGs, non-images named .jpg): stop with one line, or skip.

``data.on_bad_file`` chooses:

* ``error`` (default): a :class:`BadImageFile` (a :class:`~kdlab.errors.KdlabError`) naming the file,
  raised in the main process. A DataLoader worker never raises: it hands the failure back with the
  batch (see :mod:`kdlab.data.file_samples`) and the loader raises it, so the user sees one line,
  not a worker traceback.
* ``skip``: one warning line per file, and the sample is replaced by the next readable sample in
  dataset order (index + 1, + 2, ..., wrapping around), augmented with the replaced sample's own
  seed. The replacement depends only on which files are bad, so it is deterministic.

A :class:`BadFileLog` collects what was met (shared by a dataset's splits and their loaders); its
:meth:`~BadFileLog.summary` goes into a run's ``summary.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from kdlab.errors import KdlabError

log = logging.getLogger("kdlab.data")

ON_BAD_FILE = ("error", "skip")
MAX_NAMES = 20  # file names kept in the summary (the count is always complete)


class BadImageFile(KdlabError):
    """An image file that cannot be decoded, with ``data.on_bad_file=error``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"unreadable image file {path} ({reason}); replace or delete it, or set "
                         "data.on_bad_file=skip to skip such files")
        self.path, self.reason = path, reason


class SkippedAll(KdlabError):
    """Every file of a set is unreadable: nothing can replace a bad sample."""


def check_on_bad_file(value: str) -> str:
    """``value`` if it is a valid ``data.on_bad_file``, else a one-line error."""
    if value not in ON_BAD_FILE:
        raise KdlabError(f"data.on_bad_file must be one of {', '.join(ON_BAD_FILE)}; got {value!r}")
    return value


def reason(exc: BaseException) -> str:
    """A one-line description of a decoding failure."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = text.split(", ")[-1] if text.startswith("decode_") else text  # torchvision's C++ location prefix
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, RuntimeError,
                 Image.DecompressionBombError)


def open_rgb(path: str) -> Image.Image:
    """The file at ``path`` fully decoded as an RGB PIL image, or :class:`BadImageFile`."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except DECODE_ERRORS as e:
        raise BadImageFile(path, reason(e)) from None


@dataclass
class BadFileLog:
    """Unreadable files met so far, and how many samples were replaced because of them."""

    policy: str = "error"
    files: dict[str, str] = field(default_factory=dict)  # path -> reason, in the order met
    replaced: int = 0  # samples served by a replacement (a file met in several epochs counts each time)

    def __post_init__(self) -> None:
        check_on_bad_file(self.policy)

    def met(self, path: str, why: str) -> None:
        """Record bad file ``path``: raise (``error``) or warn once and count (``skip``)."""
        if self.policy == "error":
            raise BadImageFile(path, why)
        self.replaced += 1
        if path not in self.files:
            self.files[path] = why
            msg = f"skipping unreadable image file {path} ({why}); data.on_bad_file=skip"
            log.warning(msg)

    @property
    def count(self) -> int:
        return len(self.files)

    def summary(self) -> dict:
        """``{"policy", "count", "replaced_samples", "files"}`` (at most :data:`MAX_NAMES` names)."""
        names = list(self.files)
        return {"policy": self.policy, "count": len(names), "replaced_samples": self.replaced,
                "files": names[:MAX_NAMES], "files_left_out": max(0, len(names) - MAX_NAMES)}
