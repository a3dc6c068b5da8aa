"""Sweep search spaces: YAML -> Optuna distributions, and a trial's picks -> config overrides.

Space file::

    sampler: tpe            # tpe (default) | random | grid (every combination of categorical choices)
    seed: 0                 # sampler seed (default 0)
    pruner: {n_startup_trials: 5, n_warmup_steps: 0}   # Optuna MedianPruner options; `pruner: none` disables
    params:                 # config key -> distribution
      method.params.temperature: {type: float, low: 1, high: 8}
      optim.lr: {type: float, low: 0.01, high: 0.2, log: true}
      method.params.beta: {type: int, low: 1, high: 10}       # optional step
      data.subset_size: {type: categorical, choices: [2000, 4000]}

Without ``params:`` every key other than sampler/seed/pruner is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.config import load_yaml, resolve_shipped
from kdlab.errors import KdlabError

SWEEP_DIR = Path(__file__).resolve().parent.parent / "sweeps"
OPTIONS = ("sampler", "seed", "pruner", "params")
TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid")
PRUNER_KEYS = ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials")


@dataclass
class Param:
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)


@dataclass
class Space:
    path: Path
    params: list[Param]
    sampler: str = "tpe"
    seed: int = 0
    pruner: dict[str, int] | None = field(default_factory=dict)


def resolve_space_path(spec: str | Path) -> Path:
    return resolve_shipped(spec, SWEEP_DIR, "search space", "space")


def _number(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KdlabError(f"{where}: {name} must be a number, got {value!r}")
    return value


def parse_param(key: str, spec: Any, where: str) -> Param:
    """One distribution; every mistake is one line naming the key."""
    at = f"{where}: {key}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise KdlabError(f"{at} must be a mapping with a type ({', '.join(TYPES)}), e.g. "
                         "{type: float, low: 1, high: 8}; got " + repr(spec))
    kind = spec["type"]
    if kind not in TYPES:
        raise KdlabError(f"{at}: unknown type {kind!r}; use one of {', '.join(TYPES)}")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}[kind]
    extra = sorted(set(spec) - allowed)
    if extra:
        raise KdlabError(f"{at}: a {kind} distribution has no {', '.join(extra)}; keys: {', '.join(sorted(allowed))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise KdlabError(f"{at}: categorical needs a non-empty list 'choices', got {choices!r}")
        return Param(key, kind, choices=choices)
    low, high = _number(at, "low", spec.get("low")), _number(at, "high", spec.get("high"))
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise KdlabError(f"{at}: int bounds must be integers, got low {low!r}, high {high!r}")
    if not low < high:
        raise KdlabError(f"{at}: low must be below high, got low {low!r}, high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise KdlabError(f"{at}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise KdlabError(f"{at}: a log-scaled range needs low > 0, got {low!r}")
    step = spec.get("step")
    if step is not None and (_number(at, "step", step) <= 0 or log):
        raise KdlabError(f"{at}: step must be > 0 and cannot be combined with log, got step {step!r}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def load_space(spec: str | Path) -> Space:
    path = resolve_space_path(spec)
    raw = load_yaml(path.read_text())
    where = f"search space {path}"
    if not isinstance(raw, dict):
        raise KdlabError(f"{where} must be a mapping of config keys to distributions, got {type(raw).__name__}")
    params_raw = raw["params"] if "params" in raw else {k: v for k, v in raw.items() if k not in OPTIONS}
    if not isinstance(params_raw, dict) or not params_raw:
        raise KdlabError(f"{where}: 'params' must map config keys to distributions, got {params_raw!r}")
    params = [parse_param(str(k), v, where) for k, v in params_raw.items()]
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise KdlabError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "grid" and any(p.type != "categorical" for p in params):
        raise KdlabError(f"{where}: sampler grid needs categorical params only (the grid is every combination)")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KdlabError(f"{where}: seed must be an integer, got {seed!r}")
    pruner = raw.get("pruner", {})
    if pruner in ("none", None, False):
        pruner = None
    elif not isinstance(pruner, dict) or any(k not in PRUNER_KEYS or not isinstance(v, int) for k, v in pruner.items()):
        raise KdlabError(f"{where}: pruner must be 'none' or a mapping of MedianPruner integer options "
                         f"({', '.join(PRUNER_KEYS)}), got {pruner!r}")
    return Space(path=path, params=params, sampler=sampler, seed=seed, pruner=pruner)


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Ask an Optuna trial for one value per parameter; returns ``{config key: value}``."""
    picks = {}
    for p in space.params:
        if p.type == "categorical":
            picks[p.key] = trial.suggest_categorical(p.key, p.choices)
        elif p.type == "int":
            picks[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            picks[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high), step=p.step, log=p.log)
    return picks


def as_overrides(picks: dict[str, Any]) -> list[str]:
    """``{"optim.lr": 0.1}`` -> ``["optim.lr=0.1"]`` (values written so YAML reads them back unchanged)."""
    import yaml

    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in picks.items()]


def probe_values(space: Space) -> list[tuple[str, object]]:
    """Every value a trial's config must accept: each choice, each bound; checked before any trial runs."""
    out: list[tuple[str, object]] = []
    for p in space.params:
        if p.type == "categorical":
            out += [(p.key, c) for c in p.choices]
        else:
            cast = int if p.type == "int" else float
            out += [(p.key, cast(p.low)), (p.key, cast(p.high))]
    return out
