"""The unrolled student and the gradient of the matching loss through it: two engines, same answer.

The student starts at w_0 = theta*_t and takes N plain SGD steps on the synthetic set:
    w_{j+1} = w_j - lr * grad_w CE(f(DSA_j(X[B_j]); w_j), softmax(Y[B_j]))
and the loss is L = ||w_N - theta*_{t+M}||^2 / ||w_0 - theta*_{t+M}||^2. We need dL/dX, dL/dY, dL/dlr.

* `plain`: keep the whole create_graph unroll and back-propagate once (memory grows with N).
* `flat`: run the N steps without a graph, keep only w_0..w_N (the minibatches and augmentation
  seeds are in the plan), then walk the steps backwards. With the adjoint a_{j+1} = dL/dw_{j+1}:
      dL/dlr   += -<g_j, a_{j+1}>
      a_j       = a_{j+1} - lr * H_j a_{j+1}          (Hessian-vector product)
      dL/dX,Y  += -lr * (dg_j/dX,Y)^T a_{j+1}
  each from one recomputed step and one double-backward. This is exact reverse-mode
  differentiation (unlike TESLA, no cross-step term is dropped); only one step's activations live
  at a time.
* `compiled` (the default): `flat`'s maths with each step written as a torch.func program
  (`distill/matching/programs.py`) compiled by torch.compile; augmentation and the label softmax
  stay eager around it. Same gradient to float round-off, same memory, fewer passes over memory.

Data-parallel (a `Shard` of K > 1 torchrun ranks): every step's minibatch is split into K contiguous
slices and rank r computes the inner loss of its slice only (weighted by slice / batch size, so the
ranks' gradients sum to the full-batch one). The inner gradient is all-reduced, so every rank takes
the identical student step; the reverse pass all-reduces the Hessian-vector products, and the image,
label and lr gradients are summed over the ranks at the end: the same gradients as one process, to
float round-off (summation order). Augmentation is drawn for the whole batch on every rank and
sliced, so the result never depends on K.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F

from distill.data.augment import DsaDraw, apply_dsa, draw_dsa
from distill.errors import DistillError
from distill.matching.loss import matching_loss, soft_cross_entropy
from distill.matching.programs import StepPrograms, on_cuda
from distill.matching.settings import DistillSettings
from distill.models.flat import FlatModel


@dataclass(frozen=True)
class UnrollPlan:
    """What makes an unroll reproducible: per step, the synthetic indices and the augmentation seed
    (and, once `on(device, ...)` was called, the augmentation draws themselves, resident on the device)."""

    batches: tuple[torch.Tensor, ...]
    augment_seeds: tuple[int, ...]
    dsa_strategy: str
    draws: tuple[DsaDraw | None, ...] | None = None

    @property
    def steps(self) -> int:
        return len(self.batches)

    def draw(self, j: int, n: int, height: int, width: int) -> DsaDraw | None:
        """Step j's augmentation draw for its n images of height x width."""
        if self.draws is not None:
            return self.draws[j]
        return draw_dsa(n, height, width, torch.Generator().manual_seed(self.augment_seeds[j]), self.dsa_strategy)

    def on(self, device: torch.device | str, height: int, width: int) -> UnrollPlan:
        """This plan with its minibatch indices and every augmentation draw on `device`, moved in ONE copy
        (one host-device transfer per iteration instead of several per student step)."""
        draws = [self.draw(j, len(b), height, width) for j, b in enumerate(self.batches)]
        tensors = list(self.batches) + [t for d in draws if d is not None for t in d.params.values()]
        moved = _move_together(tensors, torch.device(device))
        batches, rest = moved[: len(self.batches)], iter(moved[len(self.batches) :])
        placed = tuple(None if d is None else DsaDraw(d.group, {k: next(rest) for k in d.params}) for d in draws)
        return UnrollPlan(tuple(batches), self.augment_seeds, self.dsa_strategy, placed)


def _move_together(tensors: list[torch.Tensor], device: torch.device, pack: bool | None = None) -> list[torch.Tensor]:
    """The tensors on `device`: packed into one float64 buffer for a single transfer, then unpacked
    (exact for the integers, booleans and float64 values a plan holds). On the CPU nothing moves
    (`pack` forces the packing path, for tests)."""
    if not (device.type != "cpu" if pack is None else pack) or not tensors:
        return [t.to(device) for t in tensors]
    packed = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    if torch.cuda.is_available() and device.type == "cuda":
        packed = packed.pin_memory()
    packed = packed.to(device, non_blocking=True)
    out, offset = [], 0
    for t in tensors:
        out.append(packed[offset : offset + t.numel()].view(t.shape).to(t.dtype))
        offset += t.numel()
    return out


def make_plan(
    num_images: int, batch_size: int | None, steps: int, generator: torch.Generator, dsa_strategy: str
) -> UnrollPlan:
    """Split random permutations of the synthetic set into minibatches of `batch_size` (None = all),
    drawing a new permutation when one runs out, and one augmentation seed per step."""
    size = num_images if batch_size is None else min(batch_size, num_images)
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        order = torch.randperm(num_images, generator=generator)
        batches.extend(order[i : i + size] for i in range(0, num_images, size))
    seeds = torch.randint(0, 2**62, (steps,), generator=generator).tolist()
    return UnrollPlan(tuple(batches[:steps]), tuple(seeds), dsa_strategy)


@dataclass
class MatchResult:
    """The matching loss (detached scalar) and its gradients: images [N, C, H, W], labels [N, K] or None, lr."""

    loss: torch.Tensor
    grad_images: torch.Tensor
    grad_labels: torch.Tensor | None
    grad_lr: torch.Tensor


@dataclass(frozen=True)
class Shard:
    """This process's share of every minibatch: rank `rank` of `world` torchrun ranks (one process: 0 of 1)."""

    rank: int = 0
    world: int = 1
    group: object | None = None  # a torch.distributed group; None = the default one

    def bounds(self, size: int) -> tuple[int, int]:
        """[lo, hi) of this rank's contiguous slice of a minibatch of `size` images."""
        if size < self.world:
            raise DistillError(
                f"{self.world} ranks share minibatches of {size} images: use at most {size} ranks or larger minibatches"
            )
        base, extra = divmod(size, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks, in place (no-op for one process)."""
        if self.world > 1:
            dist.all_reduce(tensor, group=self.group)
        return tensor

    def from_first(self, value):
        """Rank 0's `value` (any picklable object) on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def differentiable_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, differentiable (its backward sums the incoming gradients over the ranks)."""
        if self.world == 1:
            return tensor
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor, group=self.group or dist.group.WORLD)


def _step_inputs(
    images: torch.Tensor, targets: torch.Tensor, plan: UnrollPlan, j: int, shard: Shard = Shard()
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Step j's augmented minibatch slice [b, C, H, W], its target probabilities [b, K] (differentiable) and
    its weight b / B in the batch mean (this rank's slice of the B images; all of them for one process)."""
    batch = plan.batches[j].to(images.device)
    x = apply_dsa(images[batch], plan.draw(j, len(batch), images.shape[-2], images.shape[-1]))
    lo, hi = shard.bounds(len(batch))
    return x[lo:hi], targets[batch][lo:hi], (hi - lo) / len(batch)


def _step_loss(
    student: FlatModel,
    w: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    plan: UnrollPlan,
    j: int,
    shard: Shard = Shard(),
) -> torch.Tensor:
    """This rank's share of step j's inner loss: soft CE of its augmented slice, weighted by its share."""
    x, p, weight = _step_inputs(images, targets, plan, j, shard)
    return soft_cross_entropy(student(w, x), p) * weight


def _targets(label_logits: torch.Tensor | None, hard_targets: torch.Tensor | None) -> torch.Tensor:
    return F.softmax(label_logits, dim=1) if label_logits is not None else hard_targets


def match_plain(
    student: FlatModel,
    start: torch.Tensor,
    target: torch.Tensor,
    images: torch.Tensor,
    label_logits: torch.Tensor | None,
    hard_targets: torch.Tensor | None,
    lr: torch.Tensor,
    plan: UnrollPlan,
    shard: Shard = Shard(),
) -> MatchResult:
    """Engine (a): differentiate through the stored unroll graph.

    start / target: expert vectors [P]; images [N, C, H, W]; label_logits [N, K] (learned) or
    hard_targets [N, K] (fixed probabilities); lr: scalar. Inputs are not modified.
    """
    images = images.detach().requires_grad_(True)
    labels = label_logits.detach().requires_grad_(True) if label_logits is not None else None
    lr = lr.detach().requires_grad_(True)
    targets = _targets(labels, hard_targets)
    w = start.detach().requires_grad_(True)
    for j in range(plan.steps):
        loss_j = _step_loss(student, w, images, targets, plan, j, shard)
        (g,) = torch.autograd.grad(loss_j, w, create_graph=True)
        w = w - lr * shard.differentiable_sum(g)
    loss = matching_loss(w, start, target)
    wrt = [images, lr] + ([labels] if labels is not None else [])
    # each rank differentiates 1/K of the (identical) loss; the sums below restore the whole gradient
    grads = torch.autograd.grad(loss / shard.world, wrt, allow_unused=True)
    grads = [shard.sum(g if g is not None else torch.zeros_like(x)) for g, x in zip(grads, wrt)]
    return MatchResult(loss.detach(), grads[0], grads[2] if labels is not None else None, grads[1])


def match_flat(
    student: FlatModel,
    start: torch.Tensor,
    target: torch.Tensor,
    images: torch.Tensor,
    label_logits: torch.Tensor | None,
    hard_targets: torch.Tensor | None,
    lr: torch.Tensor,
    plan: UnrollPlan,
    shard: Shard = Shard(),
) -> MatchResult:
    """Engine (b): exact gradients with activation memory independent of N (see the module docstring).

    Same arguments and result as `match_plain`.
    """
    lr_value = lr.detach()
    images_const = images.detach()
    targets_const = _targets(label_logits.detach() if label_logits is not None else None, hard_targets)
    iterates = [start.detach()]
    for j in range(plan.steps):
        w = iterates[-1].requires_grad_(True)
        (g,) = torch.autograd.grad(_step_loss(student, w, images_const, targets_const, plan, j, shard), w)
        iterates[-1] = w.detach()
        iterates.append(w.detach() - lr_value * shard.sum(g))

    end = iterates[-1].requires_grad_(True)
    loss = matching_loss(end, start.detach(), target.detach())
    (adjoint,) = torch.autograd.grad(loss, end)

    leaf_images = images.detach().requires_grad_(True)
    leaf_labels = label_logits.detach().requires_grad_(True) if label_logits is not None else None
    grad_images = torch.zeros_like(images_const)
    grad_labels = torch.zeros_like(leaf_labels) if leaf_labels is not None else None
    grad_lr = torch.zeros_like(lr_value)
    for j in reversed(range(plan.steps)):
        w = iterates[j].requires_grad_(True)
        targets = _targets(leaf_labels, hard_targets)
        (g,) = torch.autograd.grad(_step_loss(student, w, leaf_images, targets, plan, j, shard), w, create_graph=True)
        grad_lr -= torch.dot(g.detach(), adjoint)
        wrt = [w, leaf_images] + ([leaf_labels] if leaf_labels is not None else [])
        vjp = torch.autograd.grad(g, wrt, grad_outputs=adjoint, allow_unused=True)
        if vjp[1] is not None:
            grad_images -= lr_value * vjp[1]
        if leaf_labels is not None and vjp[2] is not None:
            grad_labels -= lr_value * vjp[2]
        adjoint = adjoint - lr_value * shard.sum(vjp[0])
        iterates[j + 1] = None  # free as we go
    return MatchResult(
        loss.detach(),
        shard.sum(grad_images),
        shard.sum(grad_labels) if grad_labels is not None else None,
        shard.sum(grad_lr),
    )


def _program_layout(x: torch.Tensor) -> torch.Tensor:
    """`x` [B, C, H, W] copied into channels-last strides, always the same ones (differentiable).

    The compiled programs are specialised on their inputs' strides, and DSA ops return different ones;
    `contiguous(memory_format=...)` does not settle them for one-channel images, which count as
    contiguous in both layouts, so steps switched between two compiled graphs. Channels-last is the
    faster layout for CPU convolutions.
    """
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def match_programs(
    programs: StepPrograms,
    start: torch.Tensor,
    target: torch.Tensor,
    images: torch.Tensor,
    label_logits: torch.Tensor | None,
    hard_targets: torch.Tensor | None,
    lr: torch.Tensor,
    plan: UnrollPlan,
    shard: Shard = Shard(),
    keep_bytes: float = 0.0,
) -> MatchResult:
    """Engines `compiled` and `auto`: `match_flat`'s reverse walk, each step one call of a (compiled)
    torch.func program.

    Same arguments and result as `match_plain`, with `programs` built once per run for the student.
    `keep_bytes` > 0 (engine `auto`): forward-phase steps keep the gradient program's residuals while
    their total stays within `keep_bytes`, and the reverse walk back-propagates through those instead of
    recomputing the step (each kept step measures what it holds; the next one is kept while another
    of that size fits). The gradient is the same.
    """
    lr_value = lr.detach()
    images_const = images.detach()
    targets_const = _targets(label_logits.detach() if label_logits is not None else None, hard_targets)
    leaf_images = images.detach().requires_grad_(True)
    leaf_labels = label_logits.detach().requires_grad_(True) if label_logits is not None else None
    iterates = [start.detach()]
    kept: dict[int, tuple] = {}
    held, step_bytes = 0, 0  # step_bytes: what the last kept step held (0: not measured yet)
    for j in range(plan.steps):
        if keep_bytes > 0 and held + step_bytes <= keep_bytes:
            w = iterates[-1].requires_grad_(True)
            x, p, weight = _step_inputs(leaf_images, _targets(leaf_labels, hard_targets), plan, j, shard)
            with torch.enable_grad():
                g_kept, step_bytes = programs.gradient_kept(w, _program_layout(x), p)
            held += step_bytes
            if held <= keep_bytes:
                kept[j] = (g_kept, w, x, p, weight)
            iterates[-1] = w.detach()
            g = g_kept.detach() * weight
        else:
            x, p, weight = _step_inputs(images_const, targets_const, plan, j, shard)
            g = programs.gradient(iterates[-1], _program_layout(x), p) * weight
        iterates.append(iterates[-1] - lr_value * shard.sum(g))

    end = iterates[-1].requires_grad_(True)
    loss = matching_loss(end, start.detach(), target.detach())
    (adjoint,) = torch.autograd.grad(loss, end)

    grad_lr = torch.zeros_like(lr_value)
    for j in reversed(range(plan.steps)):
        if j in kept:
            g_kept, w, x, p, weight = kept.pop(j)
            wrt = [w, x] + ([p] if leaf_labels is not None else [])
            g, (adj_w, adj_x, *adj_p) = g_kept.detach(), torch.autograd.grad(g_kept, wrt, adjoint)
            adj_p = adj_p[0] if adj_p else None
        else:
            x, p, weight = _step_inputs(leaf_images, _targets(leaf_labels, hard_targets), plan, j, shard)
            g, adj_w, adj_x, adj_p = programs.adjoint(iterates[j], _program_layout(x.detach()), p.detach(), adjoint)
        grad_lr -= weight * torch.dot(g, adjoint)
        # chain the step's image / target terms through this step's DSA and softmax into the leaves
        outputs, cotangents = [x], [-lr_value * weight * adj_x]
        if leaf_labels is not None:
            outputs.append(p)
            cotangents.append(-lr_value * weight * adj_p)
        torch.autograd.backward(outputs, cotangents)
        adjoint = adjoint - lr_value * shard.sum(weight * adj_w)
        iterates[j + 1] = None  # free as we go
    grad_images = leaf_images.grad if leaf_images.grad is not None else torch.zeros_like(images_const)
    grad_labels = None
    if leaf_labels is not None:
        grad_labels = shard.sum(leaf_labels.grad if leaf_labels.grad is not None else torch.zeros_like(leaf_labels))
    return MatchResult(loss.detach(), shard.sum(grad_images), grad_labels, shard.sum(grad_lr))


Engine = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor, UnrollPlan],
    MatchResult,
]
"""(start, target, images, label_logits, hard_targets, lr, plan) -> MatchResult, for one student."""


ENGINES: dict[str, Callable[..., Callable]] = {
    "plain": lambda student, budget: partial(match_plain, student),
    "flat": lambda student, budget: partial(match_flat, student),
    "compiled": lambda student, budget: partial(
        match_programs, StepPrograms(student, compile=True, cuda_graphs=on_cuda(student))
    ),
    "auto": lambda student, budget: partial(match_programs, StepPrograms(student, compile=True), keep_bytes=budget),
}
"""Engine name -> builder taking the student and the memory budget in bytes (built once per run:
`compiled` and `auto` compile on first use; on a GPU `compiled` replays its programs as CUDA graphs,
`auto`, which keeps programs' graphs for backward, does not)."""


def make_engine(
    name: str, student: FlatModel, shard: Shard = Shard(), memory_budget: float = DistillSettings.memory_budget
) -> Engine:
    """The engine `name` (plain | flat | compiled | auto) bound to `student` and this process's `shard` of
    every minibatch; `auto` keeps step residuals up to `memory_budget` GiB per unroll. Unknown names raise
    a ValueError."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}': use {', '.join(ENGINES)}")
    if shard.world > 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in student.module.modules()):
        raise DistillError(
            f"model '{type(student.module).__name__}' has batch norm, whose statistics change when "
            "minibatches are split over ranks: distil it in one process"
        )
    return partial(ENGINES[name](student, memory_budget * 2**30), shard=shard)
