"""The batch record every loader yields and every distiller receives."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Batch:
    """One training or evaluation batch.

    ``image`` is the normalised float input (B x C x H x W), ``target`` the class indices (B,).
    ``index`` holds dataset indices when the loader was asked for them (CRD, caches). ``epoch`` is
    1-indexed, as in the reference schedules (DKD's warm-up reads it); ``step`` counts optimizer
    steps from 0. ``extra`` carries whatever the data layer adds for a method (cached teacher
    logits under ``"teacher_logits"``, contrast indices, ...).
    """

    image: Tensor
    target: Tensor
    index: Tensor | None = None
    epoch: int = 1
    step: int = 0
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        """The number of samples (images) in the batch."""
        return self.image.shape[0]

    def to(self, device, non_blocking: bool = True) -> Batch:
        mv = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(mv(self.image), mv(self.target), mv(self.index), self.epoch, self.step,
                     {k: mv(v) for k, v in self.extra.items()})
