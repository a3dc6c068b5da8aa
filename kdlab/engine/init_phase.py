"""The init phase of two-stage methods (AB, FT, FSP; RepDistiller's ``helper/pretrain.py``).

Before the main training, such a method optimises only its :meth:`init_parameters` on its
:meth:`init_losses` for ``init_epochs`` epochs at a constant learning rate (``init_lr``, else
``optim.lr``) with the run's SGD settings. Which modules run in train mode is the distiller's
``train()``, called with ``phase == "init"`` (set on compose parts too) at each init epoch: as
RepDistiller's pretrain, AB and FSP leave the student in eval mode except its feature modules
(``init_modules``), FT leaves the whole student in eval mode and trains its paraphraser only.
The result is saved to ``checkpoints/init.pt``: a run killed after the init phase does not
redo it when resumed; one killed during it redoes it from the start (it is seeded, so the
outcome is the same).

Multi-process runs (torchrun): every rank serves its share of each global batch (the trainer's
sharded loader), scales its mean loss by ``its samples x world / global samples`` as the main
phase does (:mod:`kdlab.engine.step`), and the init parameters' gradients are averaged over ranks
(:func:`kdlab.engine.ddp.average_gradients`), so every rank applies the single-process update of
the global batch (BatchNorm statistics too with ``train.sync_bn``). A non-finite loss on any rank
stops all of them. Rank 0 alone writes ``init.pt``; it holds the global state, so a run resumes
from it on any number of processes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kdlab.engine import ddp, distributed, rank_io
from kdlab.engine.checkpoint import load_checkpoint_file, save_checkpoint
from kdlab.engine.metrics import as_batch
from kdlab.engine.optim import build_optimizer
from kdlab.engine.rng import capture_rng_state, restore_rng_state
from kdlab.engine.step import finite_everywhere, global_samples, share_of_mean
from kdlab.errors import KdlabError

if TYPE_CHECKING:
    from kdlab.engine.trainer import Trainer


def _set_phase(d: torch.nn.Module, phase: str) -> None:
    """``phase`` on the distiller and on any distiller inside it (a compose part with the init phase),
    so that each part's ``train()`` puts its modules in the init phase's modes."""
    for m in d.modules():
        if isinstance(getattr(m, "phase", None), str) and hasattr(m, "init_losses"):
            m.phase = phase


def run_init_phase(trainer: Trainer, path: Path) -> None:
    """Run (or reload from ``path``) the distiller's init phase."""
    d = trainer.distiller
    if distributed.broadcast_object(path.exists()):  # rank 0's view of the run folder decides
        state = load_checkpoint_file(path)
        d.load_state_dict_without_teacher(state["distiller"])
        restore_rng_state(state["rng"])
        trainer.logger.info(f"init phase: loaded {path} ({d.init_epochs} epochs done earlier)")
        return
    params = list(d.init_parameters())
    if not params:
        raise KdlabError(f"{type(d).__name__} declares an init phase but no init parameters")
    lr = d.init_lr if d.init_lr is not None else trainer.cfg.optim.lr
    opt = build_optimizer(params, replace(trainer.cfg.optim, lr=lr))
    policy = trainer.policy
    loader = trainer.train_loader
    world = distributed.world_size()
    _set_phase(d, "init")
    try:
        for epoch in range(1, d.init_epochs + 1):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            d.train()
            total, n = 0.0, 0
            for i, item in enumerate(loader):
                if i >= trainer.steps_per_epoch:
                    break
                batch = policy.prepare_batch(as_batch(item))
                batch.epoch, batch.step = epoch, i
                with policy.autocast():
                    _, terms = d(batch)
                loss = sum(terms.values())
                if not finite_everywhere(loss, world):
                    shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                    raise KdlabError(f"init phase diverged: non-finite loss at init epoch {epoch}, batch {i} "
                                     f"({shown}); try a lower init_lr")
                opt.zero_grad(set_to_none=True)
                m = len(batch)
                total += float(loss.detach()) * m
                n += m
                if world > 1:  # this rank's share of the global batch's mean loss (then averaged)
                    loss = share_of_mean(loss, m, world, global_samples(m, world, policy.device))
                loss.backward()
                ddp.average_gradients(params)
                opt.step()
            seen = distributed.all_reduce_sum(torch.tensor([total, float(n)], dtype=torch.float64,
                                                           device=policy.device if world > 1 else "cpu"))
            mean = float(seen[0]) / max(float(seen[1]), 1.0)
            trainer.logger.log_event("init", epoch=epoch, loss=mean, lr=lr)
            trainer.logger.print(f"init epoch {epoch}/{d.init_epochs} | loss {mean:.4f}")
    finally:
        _set_phase(d, "main")
    rank_io.save(save_checkpoint, {"distiller": d.state_dict_without_teacher(), "init_epochs": d.init_epochs,
                                   "rng": capture_rng_state()}, path)
