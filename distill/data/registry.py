"""Dataset registry: a name maps to a loader returning uint8 image tensors and their description."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from distill.errors import DistillError


@dataclass(frozen=True)
class ImageData:
    """A whole labelled image dataset held as tensors.

    train_images / test_images: uint8 [N, C, H, W]; train_labels / test_labels: int64 [N].
    mean / std: per-channel statistics of the training pixels scaled to [0, 1] (for normalisation).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])


Loader = Callable[..., ImageData]
_LOADERS: dict[str, Loader] = {}
# datasets whose folder is what they are (a user's own images): its path is part of the config's data identity,
# so two such folders get their own buffer and run folders
NAMED_BY_ROOT = frozenset({"image_folder"})


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register `loader(root: Path, download: bool) -> ImageData` under `name`."""

    def decorate(loader: Loader) -> Loader:
        _LOADERS[name] = loader
        return loader

    return decorate


def dataset_names() -> list[str]:
    """Sorted names of every registered dataset."""
    _import_builtin_loaders()
    return sorted(_LOADERS)


def load_dataset(name: str, root: str | Path | None = None, download: bool = False) -> ImageData:
    """Load dataset `name` from `root` (default `./data/<name>`), downloading first if asked.

    Unknown names raise a DistillError listing the valid ones.
    """
    _import_builtin_loaders()
    if name not in _LOADERS:
        raise DistillError(f"unknown dataset '{name}': choose one of {', '.join(sorted(_LOADERS))}")
    root = Path(root).expanduser() if root is not None else Path("data") / name
    data = _LOADERS[name](root=root, download=download)
    _check(data)
    return data


def _check(data: ImageData) -> None:
    for split in ("train", "test"):
        images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
            raise DistillError(f"dataset {data.name}: {split} split has malformed tensors "
                               f"{tuple(images.shape)} / {tuple(labels.shape)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= data.num_classes):
            raise DistillError(f"dataset {data.name}: {split} labels outside 0..{data.num_classes - 1}")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-8)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _import_builtin_loaders() -> None:
    # Imported lazily so that the registry module itself stays free of file formats.
    from distill.data import cifar, digits, idx, image_folder, mnist_5k, svhn, tiny_imagenet  # noqa: F401
