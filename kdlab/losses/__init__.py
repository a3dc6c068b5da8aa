"""Pure loss functions, reusable without the rest of kdlab: ``kdlab.losses.kd(...)`` etc."""

from kdlab.losses.logit import dkd, kd

__all__ = ["dkd", "kd"]
