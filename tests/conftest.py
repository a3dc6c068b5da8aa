"""Shared test set-up: one torch thread per test (and for shared fixtures), global torch flags restored, optional no-fsync,
optional memoised shape probes.

The tests use tiny tensors, for which one thread is as fast as two, and on a busy 2-core machine
two threads fighting over the cores can slow a test tenfold. Runs in deterministic mode switch
torch's global deterministic flag; it is put back after each test.
"""

import pytest
import torch

from kdlab.engine import checkpoint as checkpoint_module

# module- and session-scoped fixtures (trained runs shared by a file's tests) run outside the
# per-test fixture below: one thread for them too
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread_and_clean_flags():
    n = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    torch.use_deterministic_algorithms(det[0], warn_only=det[1])


@pytest.fixture
def no_fsync(monkeypatch):
    """Skip fsync in checkpoint writes (~20 ms each here); atomicity is tested in test_engine_checkpoint."""
    monkeypatch.setattr(checkpoint_module.os, "fsync", lambda fd: None)


@pytest.fixture
def memoised_probes(monkeypatch):
    """Methods size their adapters by a dummy forward per model; many constructions on the same
    model objects reuse the first probe (tests that build every method on every pair)."""
    from kdlab.features import feature_shapes
    from kdlab.methods.modules import connectors, projectors

    cache: dict = {}

    def shapes(model, image_size, channels=3):
        key = (id(model), image_size)
        if key not in cache:
            cache[key] = feature_shapes(model, image_size, channels)
        return cache[key]

    monkeypatch.setattr(connectors, "feature_shapes", shapes)
    monkeypatch.setattr(projectors, "feature_shapes", shapes)
