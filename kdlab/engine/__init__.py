"""The training engine: one loop for every method, plus its parts.

* :class:`Trainer` (``trainer.py``) — fit a distiller, checkpoint, resume exactly, test, summarise.
* ``device.py`` — device / bf16 autocast / channels_last policy, :func:`seed_everything`.
* ``optim.py`` — :func:`build_optimizer`, :func:`build_scheduler` (stepped per optimizer step).
* ``checkpoint.py`` — atomic :func:`save_checkpoint`, :func:`load_checkpoint_file`.
* ``metrics.py`` — :func:`topk_correct`, :func:`evaluate`.
* ``logging.py`` — :class:`RunLogger` (metrics.jsonl, TensorBoard, progress, summary.json).
* ``distributed.py`` — torchrun's process group, rank/world, all-reduce/gather helpers, per-rank batch.
* ``ddp.py`` — SyncBatchNorm conversion, the DDP wrapper, gathers for cross-batch state (CRD's banks).
* ``step.py`` — one optimizer step: micro-batches (``train.accumulate``), the global-batch loss scale.
* ``rank_io.py`` — rank 0 alone claims the run folder, writes checkpoints and logs.
"""

from kdlab.engine.checkpoint import load_checkpoint_file, save_checkpoint
from kdlab.engine.device import DevicePolicy, build_policy, seed_everything
from kdlab.engine.logging import RunLogger
from kdlab.engine.metrics import evaluate, topk_correct
from kdlab.engine.optim import build_optimizer, build_scheduler
from kdlab.engine.trainer import Trainer, TrainingDiverged

__all__ = ["DevicePolicy", "RunLogger", "Trainer", "TrainingDiverged", "build_optimizer", "build_policy",
           "build_scheduler", "evaluate", "load_checkpoint_file", "save_checkpoint", "seed_everything",
           "topk_correct"]
