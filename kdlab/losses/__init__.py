"""Pure loss functions, reusable without the rest of kdlab: ``kdlab.losses.kd(...)`` etc."""

from kdlab.losses.logit import dkd, kd
from kdlab.losses.logit_relation import ckd, dist
from kdlab.losses.mixing import mixed_ce, mixed_distill
from kdlab.losses.normalized import nkd, uskd, uskd_parts
from kdlab.losses.soft_label import wsld

__all__ = ["dkd", "kd"]
__all__ += ["ckd", "dist", "mixed_ce", "mixed_distill", "nkd", "uskd", "uskd_parts", "wsld"]
