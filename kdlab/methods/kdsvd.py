"""KDSVD (Lee et al. 2018): transfer SVD-derived relations between consecutive stages."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import Features
from kdlab.losses.feature import pool_to_smaller
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import pair_stages, probe_maps
from kdlab.methods.registry import register_method

SPACES = ("auto", "channel", "width")


@register_method("kdsvd", paper="Lee, Kim & Song, Self-supervised Knowledge Distillation Using Singular Value "
                                "Decomposition, ECCV 2018")
class KDSVD(Distiller):
    """SVD KD: CE + weight·Σ_pairs Σ(RBF_s − RBF_t)²/B over aligned singular vectors of consecutive stages.

    RepDistiller ``distiller_zoo/KDSVD.py`` / mdistiller ``KDSVD`` (methods.md §1.17,
    :func:`kdlab.losses.kdsvd`): post-ReLU ``stages[1:]``; the teacher keeps ``k`` right singular
    vectors, the student ``k+3``, aligned to the teacher's by largest ``|cos|`` (signed); both
    scaled by the teacher's normalised singular values; RBF ``exp(−Δ²/8)`` between consecutive
    stages; non-finite values set to 0; k=1, weight 1, CE 1.

    ``space`` picks how a map becomes a matrix:

    * ``"channel"`` — RepDistiller's ``HW×C`` (vectors in channel space): needs equal channel
      counts at every paired stage;
    * ``"width"`` — mdistiller's ``CH×W`` (vectors in width space, probably an unintended change):
      needs equal map widths;
    * ``"auto"`` (default) — channel when the channels match, else width when the widths match.

    A pair neither serves fails at construction. ``match_size=True`` (a kdlab extension, off by
    default) average-pools the larger map of each stage pair to the smaller first, which makes the
    width variant available to every pair. Additions: the SVD runs in float32 and non-finite
    gradients through it are zeroed (the references zero non-finite values only). Stage pairing:
    shallow end (``zip``). A batched SVD every step is slow on CPU.
    """

    needs = Needs.of(student={"logits", "stages"}, teacher={"stages"})

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, k: int = 1,
                 space: str = "auto", match_size: bool = False, weight: float = 1.0,
                 ce_weight: float = 1.0, image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if space not in SPACES:
            raise KdlabError(f"kdsvd: space must be one of {', '.join(SPACES)}; got {space!r}")
        if k < 1:
            raise KdlabError(f"kdsvd: k must be at least 1, got {k}")
        s_maps = probe_maps(student, image_size, "stages", "kdsvd", "student")[1:]
        t_maps = probe_maps(teacher, image_size, "stages", "kdsvd", "teacher")[1:]
        self.pairs = pair_stages(len(s_maps), len(t_maps), "start")
        if len(self.pairs) < 2:
            raise KdlabError(f"kdsvd: needs at least two stages after the stem in both networks; "
                             f"the pair has {len(self.pairs)}")
        pairs = [(s_maps[i], t_maps[j]) for i, j in self.pairs]
        if match_size:
            pairs = [((s[0], min(s[1], t[1]), min(s[2], t[2])), (t[0], min(s[1], t[1]), min(s[2], t[2])))
                     for s, t in pairs]
        channel_ok = all(s[0] == t[0] for s, t in pairs)
        width_ok = all(s[2] == t[2] for s, t in pairs)
        channels = ", ".join(f"{s[0]}->{t[0]}" for s, t in pairs)
        widths = ", ".join(f"{s[2]}->{t[2]}" for s, t in pairs)
        if space == "auto":
            if not channel_ok and not width_ok:
                raise KdlabError(f"kdsvd: the paired stages differ both in channels (student->teacher: {channels}) "
                                 f"and in widths ({widths}); KDSVD needs one of them equal at every stage "
                                 "(set match_size=true to pool maps to a common size and use the width variant)")
            space = "channel" if channel_ok else "width"
        elif space == "channel" and not channel_ok:
            raise KdlabError(f"kdsvd: space='channel' needs equal channels at every paired stage "
                             f"(student->teacher: {channels}); try space='auto' or 'width'")
        elif space == "width" and not width_ok:
            raise KdlabError(f"kdsvd: space='width' needs equal map widths at every paired stage "
                             f"(student->teacher: {widths}); set match_size=true to pool the larger map first")
        self.space = space
        self.k = k
        self.match_size = match_size
        self.weight = weight
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        pairs = [(s.stages[1:][i], t.stages[1:][j]) for i, j in self.pairs]
        if self.match_size:
            pairs = [pool_to_smaller(a, b) for a, b in pairs]
        terms = losses.kdsvd([a for a, _ in pairs], [b for _, b in pairs], self.k, self.space)
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target),
                "kdsvd": self.weight * sum(terms)}
