"""Running sums over one epoch's training steps, kept on the device (no per-step host sync).

Saved in ``last.pt`` (``state_dict``) so that an epoch resumed mid-way reports the same averages.
Top-1 is counted only for classification batches (2-D logits, 1-D targets); other tasks (detection)
report their loss terms alone.

Under DDP each rank sums its own shard; :meth:`EpochMeter.summary` and :meth:`EpochMeter.state_dict`
(collectives: every rank calls them) report the sums over all ranks, and a resumed meter holds the
totals on rank 0 only, so they are counted once whatever the new world size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdlab.engine import distributed


class EpochMeter:
    """Sample-weighted averages of the loss, each loss term and train top-1 over an epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.n = 0
        self.steps = 0
        self.seconds = 0.0
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.terms: dict[str, Tensor] = {}
        self.lr = 0.0

    def update(self, loss: Tensor, terms: dict[str, Tensor], logits: Any, target: Any, lr: float,
               n: int) -> None:
        """Add one step of ``n`` samples."""
        self.n += n
        self.steps += 1
        self.lr = lr
        self.loss += loss.detach().double() * n
        for k, v in terms.items():
            acc = self.terms.get(k)
            val = v.detach().double() * n
            self.terms[k] = val if acc is None else acc + val
        if isinstance(logits, Tensor) and isinstance(target, Tensor) and logits.dim() == 2 and target.dim() == 1:
            self.correct += (logits.detach().argmax(dim=1) == target).sum()

    def totals(self) -> tuple[int, float, int, dict[str, float]]:
        """(samples, loss sum, correct, term sums) over all ranks (a collective under DDP)."""
        keys = sorted(self.terms)
        flat = torch.stack([torch.tensor(float(self.n), dtype=torch.float64, device=self.device), self.loss,
                            self.correct.double(), *(self.terms[k] for k in keys)])
        flat = distributed.all_reduce_sum(flat).tolist()
        return int(flat[0]), flat[1], int(flat[2]), dict(zip(keys, flat[3:]))

    def summary(self) -> dict[str, Any]:
        total, loss, correct, terms = self.totals()
        n = max(total, 1)
        return {"loss": loss / n, "terms": {k: v / n for k, v in terms.items()},
                "top1": 100.0 * correct / n, "lr": self.lr,
                "img_per_s": total / self.seconds if self.seconds > 0 else 0.0}

    def state_dict(self) -> dict[str, Any]:
        total, loss, correct, terms = self.totals()
        return {"n": total, "steps": self.steps, "seconds": self.seconds, "loss": loss,
                "correct": correct, "terms": terms, "lr": self.lr}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.steps, self.seconds, self.lr = s["steps"], s["seconds"], s["lr"]
        if not distributed.is_main():  # the saved totals are counted on rank 0 alone
            s = {**s, "n": 0, "loss": 0.0, "correct": 0, "terms": {k: 0.0 for k in s["terms"]}}
        self.n = s["n"]
        self.loss = torch.tensor(s["loss"], dtype=torch.float64, device=self.device)
        self.correct = torch.tensor(s["correct"], dtype=torch.long, device=self.device)
        self.terms = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                      for k, v in s["terms"].items()}
