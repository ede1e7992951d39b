"""Baseline training sets built under the same protocol: a random real subset and the full set."""

from __future__ import annotations

import torch

from distill.data.splits import class_balanced_subset


def random_subset(
    images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced random real subset: images [num_classes * ipc, C, H, W] and hard labels [num_classes * ipc]."""
    index = class_balanced_subset(labels.cpu(), ipc, num_classes, seed).to(images.device)
    return images[index], labels[index]
