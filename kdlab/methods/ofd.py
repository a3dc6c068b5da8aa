"""OFD (Heo et al. 2019): partial L2 between connected student and teacher pre-ReLU features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab import losses
from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import FeatureRecorder, Features, get_taps
from kdlab.methods.base import Distiller, Needs
from kdlab.methods.modules.connectors import ConvBNConnector, like, pair_stages, probe_maps
from kdlab.methods.registry import register_method

MARGIN_PROBE_BATCH = 64  # dummy images for the statistical margin fallback (no bn_before_relu)


def bn_margins(teacher: nn.Module, channels: list[int]) -> list[Tensor | None]:
    """Per teacher stage (``preact[1:]``), the margin from its ``bn_before_relu`` affine params.

    ``None`` where the teacher declares no such BN, or where it does not fit the stage's channels.
    """
    bns = get_taps(teacher).bn_before_relu
    out: list[Tensor | None] = []
    for i, c in enumerate(channels):
        try:
            bn = teacher.get_submodule(bns[i]) if i < len(bns) else None
        except AttributeError:  # a tap path that is not in this model: fall back to statistics
            bn = None
        ok = isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine and bn.num_features == c
        out.append(losses.ofd_margin(bn.weight.float(), bn.bias.float()) if ok else None)
    return out


def statistical_margins(teacher: nn.Module, image_size: int) -> list[Tensor]:
    """Margins from the per-channel mean/std of the teacher's ``preact[1:]`` on N(0, 1) images.

    Deterministic (own generator); the teacher runs in eval mode and its mode is restored.
    """
    p = next(teacher.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(MARGIN_PROBE_BATCH, 3, image_size, image_size, generator=g).to(device=p.device, dtype=p.dtype)
    rec = FeatureRecorder(teacher, {"preact"})
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            pre = rec(x).preact[1:]
    finally:
        rec.remove()
        teacher.train(was_training)
    return [losses.ofd_margin(f.float().std(dim=(0, 2, 3)), f.float().mean(dim=(0, 2, 3))) for f in pre]


@register_method("ofd", paper="Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019")
class OFD(Distiller):
    """Overhaul of feature distillation: CE + weight·Σ_stages partial L2(connector(s_pre), max(t_pre, margin)).

    mdistiller ``distillers/OFD.py`` and clovaai/overhaul-distillation (methods.md §1.19,
    pitfall 8): pre-ReLU ``preact[1:]`` of both networks; per stage a connector conv 1×1 (no bias,
    He-normal) + BN on the student side; the teacher map average-pooled to the student's size;
    :func:`kdlab.losses.ofd` summed over C, H, W, averaged over the batch, stage weight
    ``1/2^(L−1−i)`` (deepest 1); weight 1e-3 (CIFAR; 1e-4 in mdistiller's ImageNet R50→MV1), CE 1.

    Margins are computed **once, at construction**, per teacher channel, from the affine ``γ``
    (std) and ``β`` (mean) of the teacher BN before each stage-end ReLU (``taps.bn_before_relu``):
    ``E[x | x < 0]`` for ``x ~ N(β, γ²)``, or ``−3|γ|`` where ``Φ(−β/|γ|) ≤ 0.001``. Build the
    method **after** loading the teacher checkpoint. Teachers without such BNs (ShuffleV2, whose
    taps declare none; mdistiller's ShuffleNets raise): the margin uses the per-channel mean and
    std of the teacher's pre-activations on a fixed batch of 64 N(0, 1) images at ``image_size``
    instead (eval mode, deterministic) — the same Gaussian reading, estimated rather than read off
    the BN; a kdlab extension.

    Teacher mode: ``teacher_mode="train"`` by default, as mdistiller (its ``train()`` override) and
    the original code (``t_net.train()``): teacher BN uses batch statistics and its running stats
    move (the trainer checkpoints them); ``"eval"`` gives the usual frozen teacher.

    Stage pairing: where the stage counts differ, the deepest stages are paired
    (mdistiller's ``_align_list``). Reference bug fixed: mdistiller then indexes the margins from
    the teacher's **first** stage, misaligned with the teacher stages actually used whenever the
    teacher has more stages than the student; here each margin follows its own teacher stage.
    Connectors are sized from a dummy forward at ``image_size``. On a WRN (pre-activation) the
    pre-ReLU map and its ``bn_before_relu`` are the next block's BN output and BN (mdistiller's
    convention, without its second BN call; pitfall 15).
    """

    needs = Needs.of(student={"logits", "preact"}, teacher={"preact"})
    teacher_mode = "train"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, weight: float = 1e-3,
                 teacher_mode: str = "train", connector_kernel: int = 1, ce_weight: float = 1.0,
                 image_size: int = 32) -> None:
        super().__init__(student, teacher)
        if teacher_mode not in ("train", "eval"):
            raise KdlabError(f"ofd: teacher_mode must be 'train' or 'eval', got {teacher_mode!r}")
        self.teacher_mode = teacher_mode
        self.teacher.train(teacher_mode == "train")
        s_maps = probe_maps(student, image_size, "preact", "ofd", "student")[1:]
        t_maps = probe_maps(teacher, image_size, "preact", "ofd", "teacher")[1:]
        self.pairs = pair_stages(len(s_maps), len(t_maps), "end")
        self.connectors = like(nn.ModuleList(
            [ConvBNConnector(s_maps[i][0], t_maps[j][0], connector_kernel) for i, j in self.pairs]), student)
        margins = bn_margins(teacher, [c for c, _, _ in t_maps])
        self.margin_source = ["bn" if m is not None else "statistics" for m in margins]
        if any(m is None for m in margins):
            stats = statistical_margins(teacher, image_size)
            margins = [m if m is not None else st for m, st in zip(margins, stats)]
        p = next(teacher.parameters())
        for k, (_, j) in enumerate(self.pairs):
            self.register_buffer(f"margin{k}", margins[j].to(device=p.device, dtype=torch.float32), persistent=False)
        self.weight = weight
        self.ce_weight = ce_weight

    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        fs, ft = s.preact[1:], t.preact[1:]
        n = len(self.pairs)
        total = 0.0
        for k, (i, j) in enumerate(self.pairs):
            f_s = self.connectors[k](fs[i])
            f_t = F.adaptive_avg_pool2d(ft[j], f_s.shape[-2:])
            total = total + losses.ofd(f_s, f_t, getattr(self, f"margin{k}")) / 2 ** (n - 1 - k)
        return {"ce": self.ce_weight * F.cross_entropy(s.logits, batch.target), "ofd": self.weight * total}
