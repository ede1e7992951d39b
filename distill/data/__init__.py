"""Datasets (registry, loaders, splits), normalisation / ZCA, and differentiable augmentation."""

from distill.data.registry import ImageData, dataset_names, load_dataset, register_dataset

__all__ = ["ImageData", "dataset_names", "load_dataset", "register_dataset"]
