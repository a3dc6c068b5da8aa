"""Every method not covered by test_methods_feature_a_pairs.py, on every pair of zoo shape families:
it builds and one training-mode forward gives finite losses (methods that read logits only: 3 pairs).

One model per shape family stands in for the zoo (resnet8 for the 16/32/64 CIFAR ResNets, …), as
in test_methods_feature_a_pairs.py; the probes are memoised there the same way.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

import kdlab
from kdlab.data.batch import Batch
from kdlab.data.contrast import ContrastSampler, batch_generator

FAMILIES = ["resnet8", "resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18"]
COVERED = {"fitnet", "at", "nst", "vid", "kdsvd", "ofd", "ab", "fsp", "ft"}  # test_methods_feature_a_pairs.py
NOT_HERE = {"ce", "compose", "comparative", "uskd", "vitkd"}  # no teacher pair / own loader / ViT-only
METHODS = sorted(n for n in set(kdlab.list_methods()) - COVERED - NOT_HERE
                 if getattr(kdlab.methods.method_class(n), "task", "classification") == "classification")
N_DATA, NCE_K, BATCH = 16, 8, 4


pytestmark = pytest.mark.usefixtures("memoised_probes")


@functools.cache
def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return kdlab.create_model(name, num_classes=10)


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    targets = torch.arange(N_DATA) % 4
    index = torch.tensor([0, 5, 9, 14])
    contrast = ContrastSampler(targets, NCE_K).draw(index, batch_generator(0, 1, 0))
    return Batch(torch.randn(BATCH, 3, 32, 32, generator=g), targets[index], index=index,
                 extra={"contrast_index": contrast})


def _params(method: str) -> dict:
    return {"crd": {"num_data": N_DATA, "nce_k": NCE_K}, "semckd": {"batch_size": BATCH}}.get(method, {})


@pytest.mark.parametrize("method", METHODS)
def test_builds_and_steps_on_every_pair_of_families(method):
    batch = _batch()
    bad = []
    pairs = list(itertools.permutations(FAMILIES, 2))
    needs = kdlab.methods.method_class(method).needs
    if needs.student | needs.teacher == {"logits"}:  # logits only: the architecture cannot matter
        pairs = [("ResNet18", "MobileNetV2"), ("ShuffleV1", "resnet8"), ("wrn_16_2", "vgg8")]
    for teacher_name, student_name in pairs:
        teacher, student = _model(teacher_name), _model(student_name)
        d = kdlab.create_distiller(method, student=student, teacher=teacher, **_params(method))
        try:
            d.train()
            with torch.no_grad():
                logits, terms = d(batch)
            if logits.shape != (BATCH, 10) or not terms or not all(torch.isfinite(v) for v in terms.values()):
                bad.append((teacher_name, student_name, {k: float(v) for k, v in terms.items()}))
        finally:
            d._rec_s.remove()
            d._rec_t.remove()
            teacher.eval()
    assert not bad
