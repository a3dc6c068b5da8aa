"""Running sums over one epoch's training steps, kept on the device (no per-step host sync).

Saved in ``last.pt`` (``state_dict``) so that an epoch resumed mid-way reports the same averages.
Top-1 is counted only for classification batches (2-D logits, 1-D targets); other tasks (detection)
report their loss terms alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


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

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {"loss": self.loss.item() / n, "terms": {k: v.item() / n for k, v in self.terms.items()},
                "top1": 100.0 * self.correct.item() / n, "lr": self.lr,
                "img_per_s": self.n / self.seconds if self.seconds > 0 else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "steps": self.steps, "seconds": self.seconds, "loss": self.loss.item(),
                "correct": int(self.correct.item()), "terms": {k: v.item() for k, v in self.terms.items()},
                "lr": self.lr}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.n, self.steps, self.seconds, self.lr = s["n"], s["steps"], s["seconds"], s["lr"]
        self.loss = torch.tensor(s["loss"], dtype=torch.float64, device=self.device)
        self.correct = torch.tensor(s["correct"], dtype=torch.long, device=self.device)
        self.terms = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                      for k, v in s["terms"].items()}
