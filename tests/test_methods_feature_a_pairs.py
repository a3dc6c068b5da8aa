"""Every feature method on every pair of zoo architectures: construction, or one clear error.

Shapes depend only on the architecture, so one model per shape family stands in for the zoo
(resnet8 for the 16/32/64 CIFAR ResNets, wrn_16_2 for the WRNs, …; ResNet50 is covered by
test_methods_feature_a.py). The dummy-forward probe is memoised per model to keep the 56×9
constructions cheap; a handful of pairs also run one forward at 32 px.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

import kdlab
from kdlab.errors import KdlabError
from kdlab.methods.modules import connectors

METHODS = ["fitnet", "at", "nst", "vid", "kdsvd", "ofd", "ab", "fsp", "ft"]
FAMILIES = ["resnet8", "resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18"]
FORWARD_PAIRS = [("MobileNetV2", "resnet8x4"), ("ShuffleV2", "wrn_16_2"), ("ResNet18", "ShuffleV1"),
                 ("vgg8", "MobileNetV2"), ("ShuffleV1", "ShuffleV2")]


@pytest.fixture(autouse=True)
def _fast(memoised_probes, monkeypatch):
    monkeypatch.setattr("kdlab.methods.ofd.MARGIN_PROBE_BATCH", 4)


@functools.cache
def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return kdlab.create_model(name, num_classes=10)


def _servable(method: str, teacher: str, student: str) -> bool:
    s = connectors.feature_shapes(_model(student), 32)["stages"]  # memoised by the fixture
    t = connectors.feature_shapes(_model(teacher), 32)["stages"]
    if method == "fsp":
        return all(a[0] == b[0] for a, b in zip(s, t))
    if method == "kdsvd":
        s, t = s[1:], t[1:]
        return all(a[0] == b[0] for a, b in zip(s, t)) or all(a[2] == b[2] for a, b in zip(s, t))
    return True


@pytest.mark.parametrize("method", METHODS)
def test_construction_on_every_pair_of_families(method):
    failures = []
    for teacher, student in itertools.permutations(FAMILIES, 2):
        try:
            d = kdlab.create_distiller(method, student=_model(student), teacher=_model(teacher))
        except KdlabError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{method}: ")
            failures.append((teacher, student))
            continue
        d._rec_s.remove()
        d._rec_t.remove()
    expected = [p for p in itertools.permutations(FAMILIES, 2) if not _servable(method, *p)]
    assert failures == expected
    if method not in ("fsp", "kdsvd"):
        assert not failures


@pytest.mark.parametrize("pair", FORWARD_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_one_forward_on_extra_pairs(pair):
    teacher, student = _model(pair[0]), _model(pair[1])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 2])
    for method in METHODS:
        hp = {"match_size": True} if method == "kdsvd" else {}
        try:
            d = kdlab.create_distiller(method, student=student, teacher=teacher, **hp)
        except KdlabError:
            assert method == "fsp"
            continue
        try:
            d.train()
            d.phase = "init" if d.init_epochs else "main"
            with torch.no_grad():
                _, terms = d(x, y)
            assert terms and all(torch.isfinite(v) for v in terms.values()), (method, terms)
        finally:
            d.phase = "main"
            d._rec_s.remove()
            d._rec_t.remove()
