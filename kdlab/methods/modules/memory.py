"""CRD's contrast memory: two momentum-updated banks of L2-normalised embeddings, one per network.

The banks are buffers (saved in checkpoints, moved with the module, never optimised). ``memory_s``
holds student embeddings and is scored against the teacher's anchor; ``memory_t`` holds teacher
embeddings and is scored against the student's (RepDistiller ``crd/memory.py``: ``memory_v1`` /
``memory_v2``). The normalising constants Z are set once, from the first batch scored, and kept
in the ``z`` buffer, so a resumed run uses the same constants as an uninterrupted one.

Under DDP the banks must see the global batch: the module declares ``gathers_batch = True`` and
the engine (:mod:`kdlab.engine.ddp`) gives it a ``sync`` whose ``gather`` all-gathers the
embeddings and indices of every rank before the update and whose ``mean`` averages Z's batch
means, so the banks and Z stay identical on every rank and equal a single process's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LocalSync:
    """Single-process stand-in for :class:`kdlab.engine.ddp.RankSync`: the batch is the global batch."""

    @staticmethod
    def gather(t: Tensor) -> Tensor:
        return t

    @staticmethod
    def mean(t: Tensor) -> Tensor:
        return t


class ContrastMemory(nn.Module):
    """Memory banks of ``num_data`` × ``dim`` embeddings with temperature and momentum."""

    gathers_batch = True  # state across the batch dimension: the engine sets ``sync`` under DDP

    def __init__(self, dim: int, num_data: int, temperature: float = 0.07, momentum: float = 0.5) -> None:
        super().__init__()
        self.num_data, self.temperature, self.momentum = num_data, temperature, momentum
        bound = 1.0 / math.sqrt(dim / 3)  # uniform in ±1/sqrt(dim/3), as the reference
        self.register_buffer("memory_s", torch.rand(num_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("memory_t", torch.rand(num_data, dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("z", torch.full((2,), -1.0))  # (Z_s, Z_t); negative = not set yet
        self.sync = LocalSync()

    def forward(self, v_s: Tensor, v_t: Tensor, contrast_index: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised scores ``(out_s, out_t)``, each B×(K+1) with the positive first.

        ``out_s = exp(⟨memory_t[idx], v_s⟩/τ)/Z_s`` (student anchor against teacher memories) and
        ``out_t = exp(⟨memory_s[idx], v_t⟩/τ)/Z_t``.
        """
        v_s, v_t = v_s.float(), v_t.float()
        # float32 throughout: exp(1/0.07) ≈ 1.6e6 overflows float16 under autocast
        with torch.autocast(device_type=v_s.device.type, enabled=False):
            out_s = torch.exp(torch.einsum("bkd,bd->bk", self.memory_t[contrast_index], v_s) / self.temperature)
            out_t = torch.exp(torch.einsum("bkd,bd->bk", self.memory_s[contrast_index], v_t) / self.temperature)
            if bool((self.z < 0).any()):
                with torch.no_grad():
                    self.z.copy_(self.sync.mean(torch.stack([out_s.mean(), out_t.mean()])) * self.num_data)
            return out_s / self.z[0], out_t / self.z[1]

    @torch.no_grad()
    def update(self, v_s: Tensor, v_t: Tensor, index: Tensor) -> None:
        """``mem[index] ← normalize(m·mem[index] + (1−m)·v)`` for both banks (after scoring)."""
        index = self.sync.gather(index)
        v_s, v_t = self.sync.gather(v_s.detach().float()), self.sync.gather(v_t.detach().float())
        for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
            mixed = bank[index] * self.momentum + v.detach().float() * (1 - self.momentum)
            bank.index_copy_(0, index, F.normalize(mixed, p=2, dim=1))
