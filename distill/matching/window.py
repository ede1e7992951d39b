"""DATM's difficulty-aligned window: which expert epochs the start epoch t is drawn from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """T- = min_start, T = initial upper bound, T+ = max_start, E = iterations until the bound reaches T+."""

    min_start: int
    initial_max_start: int
    max_start: int
    expansion_end: int
    sequential: bool = True


def upper_bound(window: Window, iteration: int) -> int:
    """Exclusive upper bound U(it) of the start epoch.

    With sequential generation U grows linearly from T to T+ (one epoch every E / (T+ - T)
    iterations) and stays at T+ after iteration E; without it U = T+ throughout. Small synthetic
    sets can only hold the easy early part of a trajectory, which is why the bound starts low.
    """
    if not window.sequential:
        return window.max_start
    grown = window.initial_max_start + (window.max_start - window.initial_max_start) * iteration // window.expansion_end
    return min(grown, window.max_start)


def sample_start_epoch(window: Window, iteration: int, generator: torch.Generator) -> int:
    """A start epoch t drawn uniformly from the integers T- .. U(it) - 1. The lower bound never moves."""
    high = upper_bound(window, iteration)
    return int(torch.randint(window.min_start, high, (1,), generator=generator))


def required_epochs(max_start_epoch: int, expert_epochs: int) -> int:
    """Expert epochs a window needs: start epochs go up to T+ - 1 and targets lie M epochs further."""
    return max_start_epoch - 1 + expert_epochs
