"""kdlab's data layer: datasets by name, tensor-resident images, reproducible loaders.

>>> data = build_dataset("cifar100", "data", val_fraction=0.1)
>>> loader = build_loader(data.train, batch_size=64, train=True, device="cuda",
...                       mean=data.mean, std=data.std)
>>> for batch in loader: ...

Datasets: ``cifar10``, ``cifar100`` (torchvision's pickle archives), ``imagefolder``, ``imagenet``,
``places365``, ``cifar10-jpeg`` (class-folder trees), ``tiny-imagenet`` (its own layout),
``fashion-mnist`` (idx files) and ``digits`` (scikit-learn, no files). Add one with
``@register_dataset("name")`` (see :mod:`kdlab.data.catalog`).
"""

from kdlab.data import cifar, coco_catalog, digits, fashion_mnist, folder, tiny_imagenet  # noqa: F401  (registers)
from kdlab.data.batch import Batch
from kdlab.data.build import build_dataset, list_datasets
from kdlab.data.bundle import DataBundle
from kdlab.data.catalog import DATASETS, RawDataset, register_dataset
from kdlab.data.constants import CIFAR10_STATS, CIFAR100_STATS, IMAGENET_STATS
from kdlab.data.imagesets import FileImageSet, ImageSet, TensorImageSet
from kdlab.data.loader import FileLoader, Loader, TensorLoader, build_loader
from kdlab.data.reference import build_reference_loader

__all__ = [
    "Batch", "CIFAR10_STATS", "CIFAR100_STATS", "DATASETS", "DataBundle", "FileImageSet", "FileLoader",
    "IMAGENET_STATS", "ImageSet", "Loader", "RawDataset", "TensorImageSet", "TensorLoader", "build_dataset",
    "build_loader", "build_reference_loader", "list_datasets", "register_dataset",
]
