"""Seeded, stratified index selection: validation carving and class-balanced subsets."""

from __future__ import annotations

import numpy as np
import torch

from distill.errors import DistillError


def fixed_test_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices of `labels` [N]: a stratified, seeded `test_fraction` held out as the test
    split, for datasets published without one."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


def stratified_holdout(labels: torch.Tensor, holdout_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices of `labels` [N] into (kept, held out) with `holdout_per_class` of every class held out.

    The choice depends only on `labels` and `seed`. Both index tensors are sorted.
    """
    if holdout_per_class <= 0:
        return torch.arange(len(labels)), torch.empty(0, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    held = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        if len(members) <= holdout_per_class:
            raise DistillError(f"class {cls} has {len(members)} training images, too few to hold out "
                               f"{holdout_per_class} for validation: lower data.val_per_class")
        held.append(members[torch.randperm(len(members), generator=generator)[:holdout_per_class]])
    held_out = torch.cat(held).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_out] = False
    return torch.nonzero(mask).flatten(), held_out


def class_balanced_subset(labels: torch.Tensor, per_class: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` random examples of each class 0..num_classes-1, class-major order [C * per_class]."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in range(num_classes):
        members = torch.nonzero(labels == cls).flatten()
        if len(members) < per_class:
            raise DistillError(f"class {cls} has only {len(members)} images, fewer than ipc={per_class}: lower ipc")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)
