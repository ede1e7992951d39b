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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from distill.data.augment import dsa
from distill.matching.loss import matching_loss, soft_cross_entropy
from distill.matching.programs import StepPrograms
from distill.models.flat import FlatModel


@dataclass(frozen=True)
class UnrollPlan:
    """What makes an unroll reproducible: per step, the synthetic indices and the augmentation seed."""

    batches: tuple[torch.Tensor, ...]
    augment_seeds: tuple[int, ...]
    dsa_strategy: str

    @property
    def steps(self) -> int:
        return len(self.batches)


def make_plan(num_images: int, batch_size: int | None, steps: int, generator: torch.Generator,
              dsa_strategy: str) -> UnrollPlan:
    """Split random permutations of the synthetic set into minibatches of `batch_size` (None = all),
    drawing a new permutation when one runs out, and one augmentation seed per step."""
    size = num_images if batch_size is None else min(batch_size, num_images)
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        order = torch.randperm(num_images, generator=generator)
        batches.extend(order[i:i + size] for i in range(0, num_images, size))
    seeds = torch.randint(0, 2**62, (steps,), generator=generator).tolist()
    return UnrollPlan(tuple(batches[:steps]), tuple(seeds), dsa_strategy)


@dataclass
class MatchResult:
    """The matching loss (detached scalar) and its gradients: images [N, C, H, W], labels [N, K] or None, lr."""

    loss: torch.Tensor
    grad_images: torch.Tensor
    grad_labels: torch.Tensor | None
    grad_lr: torch.Tensor


def _step_inputs(images: torch.Tensor, targets: torch.Tensor, plan: UnrollPlan, j: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step j's augmented minibatch [B, C, H, W] and its target probabilities [B, K] (differentiable)."""
    batch = plan.batches[j].to(images.device)
    x = dsa(images[batch], torch.Generator().manual_seed(plan.augment_seeds[j]), plan.dsa_strategy)
    return x, targets[batch]


def _step_loss(student: FlatModel, w: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
               plan: UnrollPlan, j: int) -> torch.Tensor:
    """Inner loss of step j: soft CE of the augmented minibatch against its target distribution."""
    x, p = _step_inputs(images, targets, plan, j)
    return soft_cross_entropy(student(w, x), p)


def _targets(label_logits: torch.Tensor | None, hard_targets: torch.Tensor | None) -> torch.Tensor:
    return F.softmax(label_logits, dim=1) if label_logits is not None else hard_targets


def match_plain(student: FlatModel, start: torch.Tensor, target: torch.Tensor, images: torch.Tensor,
                label_logits: torch.Tensor | None, hard_targets: torch.Tensor | None, lr: torch.Tensor,
                plan: UnrollPlan) -> MatchResult:
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
        loss_j = _step_loss(student, w, images, targets, plan, j)
        (g,) = torch.autograd.grad(loss_j, w, create_graph=True)
        w = w - lr * g
    loss = matching_loss(w, start, target)
    wrt = [images, lr] + ([labels] if labels is not None else [])
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    zero = torch.zeros_like
    return MatchResult(loss.detach(), grads[0] if grads[0] is not None else zero(images),
                       (grads[2] if grads[2] is not None else zero(labels)) if labels is not None else None,
                       grads[1] if grads[1] is not None else zero(lr))


def match_flat(student: FlatModel, start: torch.Tensor, target: torch.Tensor, images: torch.Tensor,
               label_logits: torch.Tensor | None, hard_targets: torch.Tensor | None, lr: torch.Tensor,
               plan: UnrollPlan) -> MatchResult:
    """Engine (b): exact gradients with activation memory independent of N (see the module docstring).

    Same arguments and result as `match_plain`.
    """
    lr_value = lr.detach()
    images_const = images.detach()
    targets_const = _targets(label_logits.detach() if label_logits is not None else None, hard_targets)
    iterates = [start.detach()]
    for j in range(plan.steps):
        w = iterates[-1].requires_grad_(True)
        (g,) = torch.autograd.grad(_step_loss(student, w, images_const, targets_const, plan, j), w)
        iterates[-1] = w.detach()
        iterates.append(w.detach() - lr_value * g)

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
        (g,) = torch.autograd.grad(_step_loss(student, w, leaf_images, targets, plan, j), w, create_graph=True)
        grad_lr -= torch.dot(g.detach(), adjoint)
        wrt = [w, leaf_images] + ([leaf_labels] if leaf_labels is not None else [])
        vjp = torch.autograd.grad(g, wrt, grad_outputs=adjoint, allow_unused=True)
        if vjp[1] is not None:
            grad_images -= lr_value * vjp[1]
        if leaf_labels is not None and vjp[2] is not None:
            grad_labels -= lr_value * vjp[2]
        adjoint = adjoint - lr_value * vjp[0]
        iterates[j + 1] = None  # free as we go
    return MatchResult(loss.detach(), grad_images, grad_labels, grad_lr)


def match_programs(programs: StepPrograms, start: torch.Tensor, target: torch.Tensor, images: torch.Tensor,
                   label_logits: torch.Tensor | None, hard_targets: torch.Tensor | None, lr: torch.Tensor,
                   plan: UnrollPlan) -> MatchResult:
    """Engine `compiled`: `match_flat`'s reverse walk, each step one call of a (compiled) torch.func program.

    Same arguments and result as `match_plain`, with `programs` built once per run for the student.
    """
    lr_value = lr.detach()
    images_const = images.detach()
    targets_const = _targets(label_logits.detach() if label_logits is not None else None, hard_targets)
    iterates = [start.detach()]
    for j in range(plan.steps):
        x, p = _step_inputs(images_const, targets_const, plan, j)
        # one memory layout (DSA ops return different strides, each would compile a graph of its own);
        # channels-last is the faster one for CPU convolutions
        iterates.append(iterates[-1] - lr_value * programs.gradient(iterates[-1], x.contiguous(memory_format=torch.channels_last), p))

    end = iterates[-1].requires_grad_(True)
    loss = matching_loss(end, start.detach(), target.detach())
    (adjoint,) = torch.autograd.grad(loss, end)

    leaf_images = images.detach().requires_grad_(True)
    leaf_labels = label_logits.detach().requires_grad_(True) if label_logits is not None else None
    grad_lr = torch.zeros_like(lr_value)
    for j in reversed(range(plan.steps)):
        x, p = _step_inputs(leaf_images, _targets(leaf_labels, hard_targets), plan, j)
        g, adj_w, adj_x, adj_p = programs.adjoint(iterates[j], x.detach().contiguous(memory_format=torch.channels_last), p.detach(),
                                                 adjoint)
        grad_lr -= torch.dot(g, adjoint)
        # chain the step's image / target terms through this step's DSA and softmax into the leaves
        outputs, cotangents = [x], [-lr_value * adj_x]
        if leaf_labels is not None:
            outputs.append(p)
            cotangents.append(-lr_value * adj_p)
        torch.autograd.backward(outputs, cotangents)
        adjoint = adjoint - lr_value * adj_w
        iterates[j + 1] = None  # free as we go
    grad_images = leaf_images.grad if leaf_images.grad is not None else torch.zeros_like(images_const)
    grad_labels = None
    if leaf_labels is not None:
        grad_labels = leaf_labels.grad if leaf_labels.grad is not None else torch.zeros_like(leaf_labels)
    return MatchResult(loss.detach(), grad_images, grad_labels, grad_lr)


Engine = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                   torch.Tensor, UnrollPlan], MatchResult]
"""(start, target, images, label_logits, hard_targets, lr, plan) -> MatchResult, for one student."""

ENGINES: dict[str, Callable[[FlatModel], Engine]] = {
    "plain": lambda student: partial(match_plain, student),
    "flat": lambda student: partial(match_flat, student),
    "compiled": lambda student: partial(match_programs, StepPrograms(student, compile=True)),
}
"""Engine name -> builder taking the student (built once per run: `compiled` compiles on first use)."""


def make_engine(name: str, student: FlatModel) -> Engine:
    """The engine `name` (plain | flat | compiled) bound to `student`; unknown names raise a ValueError."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}': use {', '.join(ENGINES)}")
    return ENGINES[name](student)
