"""The distiller contract: a method is an nn.Module that returns student logits and named losses.

A :class:`Distiller` owns the student, the frozen teacher (eval mode unless the method says
otherwise) and any trainable connectors. Subclasses declare what features they need
(:class:`Needs`) and implement :meth:`Distiller.losses`, returning already-weighted loss terms;
the trainer sums them. The base class records features by hooks, runs the teacher without
gradients, and keeps the teacher out of the optimizer and out of checkpoints.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from kdlab.data.batch import Batch
from kdlab.errors import KdlabError
from kdlab.features import FeatureRecorder, Features

_BUILD = threading.local()

#: Facts of the data a method may declare as keyword arguments; unless its config sets them they
#: are filled in from the dataset and data config (:func:`kdlab.experiment.method_params`).
DATA_FACTS = ("image_size", "num_data", "num_classes", "batch_size")


@contextmanager
def building_parts() -> Iterator[None]:
    """Distillers constructed inside this block are *parts* of a composite method.

    A part installs no feature hooks and does not register the student and teacher as its
    submodules (it still reads them as ``self.student`` / ``self.teacher``): the composite owns
    the networks, records the union of its parts' needs with one recorder per network, and calls
    each part's :meth:`Distiller.losses`. A part's own connectors stay its submodules, so they are
    trained and saved through the composite.
    """
    previous = getattr(_BUILD, "part", False)
    _BUILD.part = True
    try:
        yield
    finally:
        _BUILD.part = previous


@dataclass(frozen=True)
class Needs:
    """Feature parts (see :data:`kdlab.features.FEATURE_PARTS`) a method reads from each network."""

    student: frozenset[str] = frozenset({"logits"})
    teacher: frozenset[str] = frozenset({"logits"})

    @classmethod
    def of(cls, student: set[str] | None = None, teacher: set[str] | None = None) -> Needs:
        return cls(frozenset(student or {"logits"}), frozenset(teacher if teacher is not None else {"logits"}))


class Distiller(nn.Module):
    """Base class of every method (teacher training included, as the plain ``ce`` method).

    Class attributes a method may set:

    * ``needs`` — the feature parts it reads.
    * ``uses_teacher`` — False for self-distillation and plain training.
    * ``teacher_mode`` — ``"eval"`` (default) or ``"train"`` (BN on batch statistics, e.g. OFD).
    * ``needs_index`` — the loader must put dataset indices in ``batch.index``.
    * ``drop_last`` — the loader must drop a final incomplete batch.
    * ``contrast_negatives`` / ``contrast_mode`` — K > 0 asks the training loader for
      ``batch.extra["contrast_index"]`` (a positive and K other-class negatives per sample;
      ``"exact"`` or ``"relax"`` positives, see :mod:`kdlab.data.contrast`). May be set per instance.
    * ``loader_kind`` / ``loader_options`` — ``"images"`` (default) or another training loader
      registered in :data:`kdlab.experiment.TRAIN_LOADERS` (e.g. ``"tuples"``), with its options.
    * ``hinton_kd_param`` — the name of the hyper-parameter weighting a Hinton-KD term the method
      adds on its own (e.g. CRD's ``kd_weight``), so that a composite with a ``kd`` part counts KD once.

    ``needs``, ``teacher_mode``, ``drop_last`` and ``needs_index`` may also be set per instance
    (before ``super().__init__`` for ``needs``), e.g. from a hyper-parameter.

    Two-stage methods (AB, FT, FSP) set ``self.init_epochs > 0`` and implement
    :meth:`init_losses` (and optionally :meth:`init_parameters`, ``self.init_lr``): the trainer
    first runs that many epochs with ``self.phase == "init"``, optimising only the init
    parameters at a constant learning rate, then the main phase.
    """

    needs: ClassVar[Needs] = Needs()
    uses_teacher: ClassVar[bool] = True
    teacher_mode: ClassVar[str] = "eval"
    needs_index: ClassVar[bool] = False
    drop_last: ClassVar[bool] = False
    contrast_negatives: int = 0
    contrast_mode: str = "exact"
    loader_kind: ClassVar[str] = "images"
    hinton_kd_param: ClassVar[str | None] = None
    is_part: bool = False
    init_epochs: int = 0
    init_lr: float | None = None
    phase: str = "main"

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None) -> None:
        super().__init__()
        name = getattr(self, "method_name", type(self).__name__)
        if self.uses_teacher and teacher is None:
            raise KdlabError(f"method {name!r} needs a teacher; set teacher.name (and teacher.checkpoint)")
        if not self.uses_teacher and teacher is not None:
            teacher = None  # self-distillation / plain training: a given teacher is ignored
        if getattr(_BUILD, "part", False):  # see building_parts(): the composite owns the networks
            self.is_part = True
            object.__setattr__(self, "student", student)
            object.__setattr__(self, "teacher", teacher)
            self._rec_s = self._rec_t = None
            return
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.train(self.teacher_mode == "train")
        self._rec_s = FeatureRecorder(student, self.needs.student)
        self._rec_t = FeatureRecorder(teacher, self.needs.teacher) if teacher is not None else None

    @property
    def loader_options(self) -> dict:
        """Options for a non-default training loader (see ``loader_kind``)."""
        return {}

    # ---- the contract -------------------------------------------------------------------
    def losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        """Return named, already-weighted loss terms (the trainer sums them)."""
        raise NotImplementedError

    def init_losses(self, s: Features, t: Features | None, batch: Batch) -> dict[str, Tensor]:
        """Loss terms of the init phase (two-stage methods only)."""
        raise NotImplementedError(f"{type(self).__name__} has no init phase")

    def init_parameters(self) -> Iterator[nn.Parameter]:
        """What the init phase optimises (default: every trainable parameter)."""
        return self.trainable_parameters()

    def student_logits(self, s: Features, batch: Batch) -> Tensor:
        """The logits reported for the student (SimKD-like methods override)."""
        return s.logits

    def inference_model(self) -> nn.Module:
        """The network that is evaluated and exported as 'the student'."""
        return self.student

    # ---- running ------------------------------------------------------------------------
    def forward(self, images: Tensor | Batch, targets: Tensor | None = None, *, epoch: int = 1,
                index: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if self.is_part:
            raise KdlabError(f"{type(self).__name__} was built as a part of a composite method; run the composite")
        batch = images if isinstance(images, Batch) else Batch(images, targets, index=index, epoch=epoch)
        s = self._rec_s(batch.image)
        t = self.teacher_features(batch)
        terms = self.init_losses(s, t, batch) if self.phase == "init" else self.losses(s, t, batch)
        return self.student_logits(s, batch), terms

    def teacher_features(self, batch: Batch) -> Features | None:
        """Teacher features without gradient; cached logits in the batch replace the forward."""
        if self._rec_t is None:
            return None
        cached = batch.extra.get("teacher_logits")
        if cached is not None and self.needs.teacher == {"logits"}:
            return Features(logits=cached)
        with torch.no_grad():
            return self._rec_t(batch.image).detach()

    def set_teacher_mode(self, mode: str) -> None:
        """Force the teacher's mode during training: ``"eval"`` (running BN statistics) or ``"train"``
        (batch statistics, as some reference code leaves it); ``train.teacher_mode`` in a config."""
        if mode not in ("eval", "train"):
            raise KdlabError(f"teacher mode must be 'eval' or 'train', got {mode!r}")
        self.teacher_mode = mode
        if self.teacher is not None:
            self.teacher.train(self.training and mode == "train")

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None and self.teacher_mode != "train":
            self.teacher.eval()
        return self

    # ---- parameters and state -----------------------------------------------------------
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student and connector parameters; never the teacher's."""
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith("teacher."):
                yield p

    def extra_parameters(self) -> int:
        """Number of trainable parameters the method adds on top of the student (connectors)."""
        return sum(p.numel() for n, p in self.named_parameters()
                   if p.requires_grad and not n.startswith(("teacher.", "student.")))

    def state_dict_without_teacher(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_state_dict_without_teacher(self, state: dict[str, Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise KdlabError(f"checkpoint does not fit this run: missing {missing[:5]}, unexpected {unexpected[:5]}")
