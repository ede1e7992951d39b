"""How the T trajectory samples of one update are shared by K torchrun ranks.

With `trajectories_per_iteration` = T and K ranks, the ranks form G = gcd(K, T) groups of K / G
contiguous ranks. Group g unrolls samples g, g + G, g + 2G, ... and its ranks split each of those
unrolls' minibatches between them (a `Shard` of the group). Every rank draws all T samples from the
same generator, so the samples and the result never depend on K; only who computes what does. At the
end one all-reduce over every rank turns the groups' sums into the mean over the T samples, and every
rank holds the same bits (an all-reduce hands every rank one buffer).

G = 1 (one process, T = 1, or K and T coprime) is the plain data-parallel layout: every rank takes
part in every sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from distill.matching.unroll import MatchResult, Shard


def spread_layout(rank: int, world: int, samples: int) -> tuple[int, int, int, int]:
    """(groups G, this rank's group, its rank inside the group, the group's size) for `samples` trajectory
    samples per update over `world` ranks; G = gcd(world, samples), groups are contiguous ranks."""
    groups = math.gcd(world, samples)
    size = world // groups
    return groups, rank // size, rank % size, size


def mean_result(results: list[MatchResult]) -> MatchResult:
    """The mean loss and gradients of several samples (one sample: itself)."""
    if len(results) == 1:
        return results[0]
    n = len(results)
    labels = None if results[0].grad_labels is None else sum(r.grad_labels for r in results) / n
    return MatchResult(
        sum(r.loss for r in results) / n,
        sum(r.grad_images for r in results) / n,
        labels,
        sum(r.grad_lr for r in results) / n,
    )


@dataclass(frozen=True)
class Spread:
    """This rank's part of an update: which samples it unrolls (`mine`), the `shard` of their minibatches
    it computes, and how the parts become the mean over all samples (`combine`)."""

    samples: int = 1
    groups: int = 1
    group: int = 0
    shard: Shard = Shard()  # this rank's slice of every minibatch, inside its group
    world: Shard = Shard()  # every rank

    def mine(self) -> list[int]:
        """Indices of the samples this rank's group unrolls."""
        return list(range(self.group, self.samples, self.groups))

    def combine(self, results: list[MatchResult | None], zeros: MatchResult) -> MatchResult | None:
        """The mean over all `samples` of this rank's `results` (one per `mine()`; None: that sample's
        expert vectors were not finite) and the other groups' ones, identical on every rank; None when
        any sample on any rank was None. `zeros` is a result of zeros shaped like the real ones."""
        if self.groups == 1:
            return None if any(r is None for r in results) else mean_result(results)
        kept = [r for r in results if r is not None]
        missing = torch.full_like(zeros.grad_lr, float(len(results) - len(kept)))
        packed = torch.stack(
            [sum((r.loss for r in kept), zeros.loss), sum((r.grad_lr for r in kept), zeros.grad_lr), missing]
        )
        images = sum((r.grad_images for r in kept), zeros.grad_images.clone())
        labels = None if zeros.grad_labels is None else sum((r.grad_labels for r in kept), zeros.grad_labels.clone())
        for tensor in (packed, images) + (() if labels is None else (labels,)):
            self.world.sum(tensor)  # each group's sum arrives once from each of its ranks
        if float(packed[2]) > 0:
            return None
        scale = self.world.world // self.groups * self.samples
        return MatchResult(
            packed[0] / scale, images / scale, None if labels is None else labels / scale, packed[1] / scale
        )


def spread_over(world: Shard, samples: int) -> Spread:
    """The layout of `samples` trajectory samples per update over `world`'s ranks (see the module
    docstring). With several groups, every rank creates every group's process group, in order."""
    groups, group, inner, size = spread_layout(world.rank, world.world, samples)
    if groups == 1:
        return Spread(samples, 1, 0, world, world)
    handle = None
    if size > 1:
        for g in range(groups):
            created = dist.new_group(ranks=list(range(g * size, (g + 1) * size)))
            handle = created if g == group else handle
    return Spread(samples, groups, group, Shard(inner, size, handle), world)
