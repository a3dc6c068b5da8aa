"""keep_freed_host_memory: batch-sized blocks come from the malloc heap, not a fresh mmap each time.

glibc's own counters (``mallinfo2``: ``hblkhd`` = bytes in mmapped blocks, ``arena`` = heap bytes)
show where a 40 MB tensor was placed. Each case runs in a fresh interpreter: the setting is
process-wide and once set stays set.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                               "fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    from kdlab.data.host_memory import keep_freed_host_memory
    assert keep_freed_host_memory() is True
    assert keep_freed_host_memory() is True  # once per process, same answer
before = libc.mallinfo2()
x = torch.empty(40 * 2**20, dtype=torch.uint8).fill_(1)
during = libc.mallinfo2()
print(during.hblkhd - before.hblkhd, during.arena - before.arena)
"""


def _placement(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mmapped, heap = map(int, out.stdout.split())
    return mmapped, heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_big_blocks_move_from_mmap_to_the_heap() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    mmapped, heap = _placement("default")
    assert mmapped >= 40 * 2**20 and heap < 2**20  # by default: a fresh mmap, given back on free
    mmapped, heap = _placement("keep")
    # kept: from the heap (which grows by the block less whatever free space it already had)
    assert mmapped < 2**20 and heap >= 36 * 2**20


def test_off_linux_it_is_a_no_op(monkeypatch) -> None:
    from kdlab.data import host_memory
    monkeypatch.setattr(host_memory, "_done", None)
    monkeypatch.setattr(host_memory.sys, "platform", "darwin")
    assert host_memory.keep_freed_host_memory() is False
