"""Per-dataset normalisation constants (mean, std per RGB channel, in 0..1 units).

A teacher checkpoint must be used with the normalisation it was trained with (methods.md §4 item
17), so these are only the defaults a :class:`~kdlab.data.DataBundle` carries; ``build_loader``
takes ``mean``/``std`` explicitly and a caller may pass others.
"""

from __future__ import annotations

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]

#: RepDistiller / mdistiller / SimKD / CompKD CIFAR-100 constants (methods.md §2.7).
CIFAR100_STATS: Stats = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
#: The usual CIFAR-10 train-set statistics.
CIFAR10_STATS: Stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
#: torchvision's ImageNet constants; also used for Tiny-ImageNet, Places365 and the CIFAR-10 JPEG
#: folders (the CIFAR-10 ResNets in shared/teachers were trained with them).
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Fashion-MNIST train set (60,000 images), computed here: mean 0.2860, std 0.3530, per channel
#: after repeating the gray channel three times.
FASHION_MNIST_STATS: Stats = ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530))
#: scikit-learn digits, computed here on its fixed 80 % train part after scaling 0..16 to 0..255.
DIGITS_STATS: Stats = ((0.3048, 0.3048, 0.3048), (0.3758, 0.3758, 0.3758))
