"""Optional logging back-ends that mirror :class:`~kdlab.engine.logging.RunLogger`'s records.

A back-end receives scalars (``scalars(prefix, values, step)``), the run's final summary
(``summary(dict)``) and ``close()``. :func:`open_backends` builds the ones a config asks for:

* W&B (``log.wandb: true``, ``log.project`` / ``log.entity`` / ``log.tags`` / ``log.mode``): one W&B
  run per kdlab run, its files under ``<run_dir>/wandb``, the whole config as the W&B config. The W&B
  run id is kept in ``<run_dir>/wandb_id.txt`` so that ``--resume`` continues the same W&B run.
  Every scalar is logged with its trainer step as ``trainer/step`` (W&B's own step must only grow,
  while kdlab logs the best checkpoint's test score at that earlier step).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Protocol

from kdlab.errors import KdlabError

WANDB_ID_FILE = "wandb_id.txt"


class LogBackend(Protocol):
    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class WandbBackend:
    """Weights & Biases: scalars, the config and the summary of one run."""

    def __init__(self, run_dir: Path, cfg: Any) -> None:
        try:
            import wandb
        except ImportError:
            raise KdlabError("log.wandb=true needs Weights & Biases: pip install 'kdlab[wandb]' "
                             "(or set log.wandb=false)") from None
        lc = cfg.log
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(project=lc.project, entity=lc.entity, tags=list(lc.tags) or None, mode=lc.mode,
                                  dir=str(run_dir), name=cfg.name, id=run_id, resume="allow",
                                  config=cfg.to_dict(), reinit="finish_previous")
        except Exception as e:  # noqa: BLE001 - network/auth problems surface as many exception types
            raise KdlabError(f"could not start W&B ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             "run `wandb login` or set log.mode=offline") from None
        self.run.define_metric("trainer/step")
        self.run.define_metric("*", step_metric="trainer/step")

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        self.run.log({**{f"{prefix}/{k}": v for k, v in values.items()}, "trainer/step": step})

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, int | float | str) or v is None:
                self.run.summary[k] = v

    def close(self) -> None:
        self.run.finish()


def open_backends(run_dir: str | Path, cfg: Any) -> list[LogBackend]:
    """The optional back-ends ``cfg.log`` asks for (none by default)."""
    log_cfg = getattr(cfg, "log", None)
    backends: list[LogBackend] = []
    if log_cfg is not None and log_cfg.wandb:
        backends.append(WandbBackend(Path(run_dir), cfg))
    return backends
