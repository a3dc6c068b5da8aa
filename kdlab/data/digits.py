"""scikit-learn's embedded 8x8 digits (1,797 images, 10 classes); no files needed.

Pixel values 0..16 are scaled to uint8 0..255 and repeated to 3 channels. The dataset has no
official test split, so a fixed one is made: a stratified 20 % held out with a constant seed
(:data:`TEST_SEED`), the same whatever ``split_seed`` is. ``image_size`` may upsample it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdlab.data.catalog import RawDataset, register_dataset
from kdlab.data.constants import DIGITS_STATS
from kdlab.data.imagesets import TensorImageSet
from kdlab.data.splits import stratified_split

TEST_FRACTION = 0.2
TEST_SEED = 1797


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 N x 3 x 8 x 8 and their int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(gray)[:, None].expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(d.target.astype(np.int64))


@register_dataset("digits")
def digits(root: Path, *, download: bool = False) -> RawDataset:
    """8x8 handwritten digits; ``root`` is ignored."""
    images, targets = digits_tensors()
    everything = TensorImageSet(images, targets)
    train_idx, test_idx = stratified_split(targets, TEST_FRACTION, TEST_SEED)
    return RawDataset(train=everything.subset(train_idx), test=everything.subset(test_idx),
                      classes=[str(i) for i in range(10)], stats=DIGITS_STATS, root=Path(root),
                      train_source="fixed 80% of sklearn's load_digits (stratified, constant seed)",
                      test_source=f"fixed stratified 20% of load_digits (seed {TEST_SEED})")
