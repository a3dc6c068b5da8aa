"""Test helper run by torchrun (or alone): train one config and dump this rank's state.

``python tests/ddp_worker.py CONFIG DUMP_DIR [key=value ...]`` trains like ``kdlab train CONFIG``
(``--overwrite``) and then saves, per rank, ``DUMP_DIR/rank<R>.pt`` holding the distiller's state
without the teacher (CRD's memory banks included), so tests can compare ranks with each other and
with a single-process run. Only the run folder's files come from the engine itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from kdlab.config import load_config
from kdlab.engine import distributed
from kdlab.engine.trainer import Trainer
from kdlab.experiment import build_experiment


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    cfg_path, dump, *overrides = argv
    cfg = load_config(cfg_path, overrides)
    exp = build_experiment(cfg, resume=False, overwrite=True)
    trainer = Trainer(cfg, exp.distiller, exp.train_loader, exp.val_loader, exp.test_loader, run_dir=exp.run_dir,
                      resume=False, overwrite=True, folder=exp.folder)
    trainer.fit()
    state = {k: v.detach().clone() for k, v in exp.distiller.state_dict_without_teacher().items()}
    Path(dump).mkdir(parents=True, exist_ok=True)
    torch.save(state, Path(dump) / f"rank{distributed.rank()}.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
