"""The losses of trajectory matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def matching_loss(student_end: torch.Tensor, expert_start: torch.Tensor, expert_target: torch.Tensor) -> torch.Tensor:
    """||w_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2 for flat vectors [P]; a scalar.

    Normalising by the expert's own displacement makes the loss comparable across start epochs:
    1.0 means the student got no closer to the target than where it started.
    """
    return (student_end - expert_target).pow(2).sum() / (expert_start - expert_target).pow(2).sum()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-(1/B) sum_b sum_c p_bc log softmax(logits)_bc for logits, target_probs [B, classes]; a scalar."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
