"""``kdlab report``, part 2: the numbers behind the figures, computed from test-split logits.

* :func:`class_mean_logits` / :func:`correlation_difference`: what mdistiller's correlation notebook
  draws. For each true class ``c``, the mean logit vector over the test images of class ``c`` (a
  ``C x C`` matrix); the figure is ``|M_student - M_teacher|`` with the diagonal set to 0, shown on a
  fixed colour scale (``max_diff``, 3.0 as in the notebook) so that runs compare. Its mean and max
  summarise how far the student's inter-class logit structure is from the teacher's.
* :func:`calibration`: reliability bins and the expected calibration error. Confidence = the top-1
  softmax probability; **15 equal-width bins over [0, 1]** (right-closed, the first one also holds 0);
  ``ECE = sum_b n_b / N * |accuracy_b - mean confidence_b|``, in percent.
* :func:`agreement`: teacher-student top-1 agreement (% of test images with the same arg-max) and
  the mean per-image ``KL(p_teacher || p_student)`` at temperature 1 (nats).
* :func:`confusion` and :func:`per_class_accuracy`.
* :func:`tsne_points`: a seeded sub-sample of the test images embedded by scikit-learn's t-SNE,
  one 2-D point per sampled image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ECE_BINS = 15
MAX_DIFF = 3.0


def class_mean_logits(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``M[c]`` = mean logit vector of the images whose true class is ``c`` (a row of NaN if none)."""
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64)
    sums.index_add_(0, labels.long(), logits.double())
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    return sums / counts[:, None]


def correlation_difference(student: Tensor, teacher: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``|M_s - M_t|`` of the class-mean logit matrices, diagonal zeroed (not divided by max_diff)."""
    diff = (class_mean_logits(student, labels, num_classes) - class_mean_logits(teacher, labels, num_classes)).abs()
    diff.fill_diagonal_(0.0)
    return diff


def confusion(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``C[i, j]`` = images of true class ``i`` predicted as ``j``."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Top-1 accuracy (%) per true class (NaN for a class with no test image)."""
    cm = confusion(pred, labels, num_classes).double()
    return 100.0 * cm.diagonal() / cm.sum(1)


def calibration(logits: Tensor, labels: Tensor, bins: int = ECE_BINS) -> dict:
    """Reliability bins (count, accuracy, mean confidence per bin) and the ECE in percent."""
    prob = F.softmax(logits.double(), dim=1)
    conf, pred = prob.max(1)
    correct = pred.eq(labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf, edges[1:-1], right=False)  # bin b holds (edge_b, edge_b+1]
    count = torch.bincount(which, minlength=bins).double()
    acc = torch.bincount(which, weights=correct, minlength=bins) / count.clamp(min=1)
    mean_conf = torch.bincount(which, weights=conf, minlength=bins) / count.clamp(min=1)
    ece = (count / len(labels) * (acc - mean_conf).abs()).sum().item() * 100.0
    return {"edges": edges.tolist(), "count": count.tolist(), "accuracy": acc.tolist(),
            "confidence": mean_conf.tolist(), "ece": ece, "bins": bins}


def agreement(student: Tensor, teacher: Tensor) -> dict:
    """Top-1 agreement (%) and mean KL(teacher || student) per image (nats, T = 1)."""
    agree = student.argmax(1).eq(teacher.argmax(1)).double().mean().item() * 100.0
    kl = F.kl_div(F.log_softmax(student.double(), 1), F.log_softmax(teacher.double(), 1), reduction="none",
                  log_target=True).sum(1).mean().item()
    return {"top1_agreement": agree, "mean_kl": kl}


def tsne_points(features: Tensor, max_points: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, points)``: a seeded sample of at most ``max_points`` rows and their 2-D t-SNE embedding."""
    from sklearn.manifold import TSNE

    n = len(features)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    x = features[torch.from_numpy(idx)].double().numpy()
    perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3)))
    pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return idx, pts
