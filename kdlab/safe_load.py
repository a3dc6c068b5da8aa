"""Reading ``.pt``/``.pth`` files so that no file can run code: ``torch.load(weights_only=True)`` only.

Every file kdlab reads (teacher and student weights, resume checkpoints, ``kdlab eval`` targets,
cached teacher logits, decoded-image caches) goes through :func:`safe_load`. A file that needs full
unpickling (a pickled ``nn.Module``, an ``argparse.Namespace``, a ``__reduce__`` payload) is refused
with one line; ``kdlab convert-checkpoint FILE --trust`` rewrites a file the user trusts as plain
tensors, once, on the user's explicit word (:func:`kdlab.engine.checkpoint.convert_trusted`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from kdlab.errors import KdlabError


def unsafe_pickle_message(path: Path, error: Exception) -> str:
    """The refusal line for a file that ``weights_only=True`` cannot load."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f" (it references {found.group(1)})" if found else ""
    return (f"checkpoint {path} needs full unpickling{what}, which can run arbitrary code, so kdlab refuses it; "
            f"if you trust its source, convert it once to plain tensors: kdlab convert-checkpoint {path} --trust")


def safe_load(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; missing, corrupt or unsafe files raise one-line errors.

    ``mmap``: the tensors stay memory-mapped from the file (large caches read on demand).
    """
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "GLOBAL " in str(e):  # a pickle that imports a class or function: more than tensors
            raise KdlabError(unsafe_pickle_message(path, e)) from None
        raise KdlabError(f"checkpoint {path} is unreadable or corrupt ({_first_line(e)})") from None
    except Exception as e:  # any failure to unpickle means an unusable file
        raise KdlabError(f"checkpoint {path} is unreadable or corrupt ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    """The informative part of a loading error, on one line (torch's weights-only text is long)."""
    text = str(e).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
