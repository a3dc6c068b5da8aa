"""Seeded, stratified index selection: class caps, few-sample subsets and validation splits.

Every function returns sorted int64 indices and draws from its own NumPy generator seeded with
``(seed, stream)``, so the result depends only on the labels and the seed, never on any global or
training RNG. Per-class counts follow the class proportions (largest-remainder rounding), so the
total is exactly what was asked for. ``stratify=False`` treats the whole set as one group: a
plain uniform random draw (Comparative KD's ``random.sample`` subset and shuffled 80/20 split).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_SUBSET_STREAM = 1
_SPLIT_STREAM = 2


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _by_class(targets: Tensor, stratify: bool = True) -> list[np.ndarray]:
    t = targets.cpu().numpy()
    if not stratify:
        return [np.arange(len(t))]
    return [np.flatnonzero(t == c) for c in np.unique(t)]


def allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder, exact sum)."""
    counts = np.asarray(counts, dtype=np.int64)
    quota = counts * (total / max(int(counts.sum()), 1))
    take = np.minimum(np.floor(quota).astype(np.int64), counts)
    rest = total - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")  # biggest fractional part first
    for c in order:
        if rest <= 0:
            break
        if take[c] < counts[c]:
            take[c] += 1
            rest -= 1
    return take


def first_per_class(targets: Tensor, k: int) -> Tensor:
    """Indices of the first ``k`` images of each class, in dataset order."""
    return _sorted([idx[:k] for idx in _by_class(targets)])


def stratified_subset(targets: Tensor, n: int, seed: int, stratify: bool = True) -> Tensor:
    """A random subset of ``n`` indices with class proportions kept as far as possible."""
    groups = _by_class(targets, stratify)
    take = allocate(np.array([len(g) for g in groups]), n)
    rng = _rng(seed, _SUBSET_STREAM)
    return _sorted([rng.permutation(g)[:k] for g, k in zip(groups, take)])


def stratified_split(targets: Tensor, fraction: float, seed: int,
                     stratify: bool = True) -> tuple[Tensor, Tensor]:
    """(kept, held_out) indices; ``round(fraction * N)`` held out, stratified by class."""
    groups = _by_class(targets, stratify)
    take = allocate(np.array([len(g) for g in groups]), round(fraction * len(targets)))
    rng = _rng(seed, _SPLIT_STREAM)
    kept, held = [], []
    for g, k in zip(groups, take):
        p = rng.permutation(g)
        held.append(p[:k])
        kept.append(p[k:])
    return _sorted(kept), _sorted(held)


def _sorted(idx: np.ndarray | list[np.ndarray]) -> Tensor:
    if isinstance(idx, list):
        idx = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(np.sort(idx).astype(np.int64))
