"""Pure loss functions, reusable without the rest of kdlab: ``kdlab.losses.kd(...)`` etc."""

from kdlab.losses.logit import dkd, kd
from kdlab.losses.logit_relation import ckd, dist
from kdlab.losses.mixing import mixed_ce, mixed_distill
from kdlab.losses.normalized import nkd, uskd, uskd_parts
from kdlab.losses.relational import cc, crd_nce, pkt, rkd, rkd_angle, rkd_distance, sp
from kdlab.losses.soft_label import wsld

__all__ = ["dkd", "kd"]
__all__ += ["ckd", "dist", "mixed_ce", "mixed_distill", "nkd", "uskd", "uskd_parts", "wsld"]
__all__ += ["cc", "crd_nce", "pkt", "rkd", "rkd_angle", "rkd_distance", "sp"]
from kdlab.losses.comparative import combine_groups, comparative  # noqa: E402

__all__ += ["combine_groups", "comparative"]
from kdlab.losses.feature_b import hcl, mgd, semckd, srrl, vitkd_generation, vitkd_mimic  # noqa: E402

__all__ += ["hcl", "mgd", "semckd", "srrl", "vitkd_generation", "vitkd_mimic"]
from kdlab.losses.feature import ab, at, factor_transfer, fsp, hint, kdsvd, nst, ofd, ofd_margin, vid  # noqa: E402

__all__ += ["ab", "at", "factor_transfer", "fsp", "hint", "kdsvd", "nst", "ofd", "ofd_margin", "vid"]
