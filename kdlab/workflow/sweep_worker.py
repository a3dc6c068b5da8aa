"""One sweep worker process (``kdlab sweep --jobs N`` starts N): ``python -m kdlab.workflow.sweep_worker DIR I TOTAL``.

It reads the sweep's ``sweep.json`` (config, overrides, space), opens the shared SQLite study and
runs trials until ``TOTAL`` are complete or pruned across all workers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kdlab.workflow.sweep_space import load_space
from kdlab.workflow.sweep_study import make_objective, open_study, optimize


def main(argv: list[str]) -> int:
    sweep_dir, worker, total = Path(argv[0]), int(argv[1]), int(argv[2])
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    space = load_space(spec["space_path"])
    study = open_study(sweep_dir, space, worker)
    optimize(study, make_objective(spec["config"], spec["overrides"], space, sweep_dir), total, total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
