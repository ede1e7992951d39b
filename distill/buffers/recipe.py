"""Training one expert on real data and recording its parameters at initialisation and after every epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from distill import checks
from distill.buffers.gsam import gsam_gradients
from distill.data.augment import DEFAULT_STRATEGY, dsa, parse_strategy
from distill.models.compiled import TrainingForward
from distill.models.flat import FlatModel
from distill.stacked import Stack, stacked_accuracies, stacked_epoch


@dataclass
class GsamSettings:
    """GSAM (DATM's experts; MTT's use plain SGD): rho, alpha and the adaptive (ASAM-style) perturbation."""

    enabled: bool = False
    rho: float = 0.01
    alpha: float = 0.3
    adaptive: bool = True

    def __post_init__(self) -> None:
        checks.positive(self, "rho")
        if not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            checks.fail(self, "alpha", "must be in [0, 1]")


@dataclass
class ExpertRecipe:
    """How one expert trains: the reference's SGD lr 0.01, no momentum, no weight decay, batch 256,
    hard-label cross-entropy, DSA (`dsa=False` disables it), optional GSAM."""

    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    gsam: GsamSettings = field(default_factory=GsamSettings)

    def __post_init__(self) -> None:
        checks.integer(self, "epochs", 1)
        checks.positive(self, "lr")
        checks.fraction(self, "momentum")
        checks.integer(self, "batch_size", 1)
        parse_strategy(self.dsa_strategy)

    @property
    def augmentation(self) -> str:
        """The DSA strategy in effect ("" when off)."""
        return self.dsa_strategy if self.dsa else ""


@dataclass
class Trajectory:
    """params[name]: [epochs + 1, *shape] (row 0 = initialisation); per-epoch train loss / test accuracy."""

    params: dict[str, torch.Tensor]
    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    images_per_second: float = 0.0


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Top-1 accuracy of `model` on images [N, C, H, W] with labels [N] (eval mode, then restored)."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(images[i:i + chunk]).argmax(1) == labels[i:i + chunk]).sum())
                  for i in range(0, len(images), chunk))
    model.train(was_training)
    return correct / max(len(images), 1)


def train_expert(model: nn.Module, recipe: ExpertRecipe, train_images: torch.Tensor, train_labels: torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor, generator: torch.Generator,
                 on_epoch: Callable[[int, float, float], None] | None = None, compiled: bool = False,
                 mixed_precision: bool = False) -> Trajectory:
    """Train `model` in place for `recipe.epochs` epochs; return its trajectory.

    Images are model-input tensors [N, C, H, W] already on the model's device; all shuffling and
    augmentation randomness comes from `generator` (CPU), so the result depends only on its seed.
    `on_epoch(epoch, train_loss, test_accuracy)` is called after each epoch (for progress bars).
    `compiled=True` runs the network through torch.compile (`TrainingForward`: the same trajectory to
    float round-off), `mixed_precision=True` under bfloat16 autocast (`distill.models.precision`: not exact;
    the recorded parameters stay float32).
    """
    flat = FlatModel(model)
    network = TrainingForward(model, compiled, mixed_precision=mixed_precision)
    snapshots = [flat.flatten().cpu()]
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    trajectory = Trajectory(params={})
    n = len(train_images)
    seen, started = 0, time.perf_counter()
    model.train()
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(n, generator=generator).to(train_images.device)
        total_loss = torch.zeros((), device=train_images.device)
        for start in range(0, n, recipe.batch_size):
            batch = order[start:start + recipe.batch_size]
            x, y = train_images[batch], train_labels[batch]
            x = dsa(x, generator, recipe.augmentation)

            def backward(forward, x=x, y=y) -> torch.Tensor:
                if recipe.gsam.enabled:
                    grads, loss = gsam_gradients(params, lambda: F.cross_entropy(forward(x), y), recipe.gsam.rho,
                                                 recipe.gsam.alpha, recipe.gsam.adaptive)
                    for p, g in zip(params, grads):
                        p.grad = g
                    return loss
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(forward(x), y)
                loss.backward()
                return loss

            loss = network.step(backward)
            optimizer.step()
            total_loss += loss.detach() * len(batch)
            seen += len(batch)
        snapshots.append(flat.flatten().cpu())
        trajectory.train_loss.append(float(total_loss) / n)
        trajectory.test_accuracy.append(accuracy(model, test_images, test_labels))
        if on_epoch is not None:
            on_epoch(epoch, trajectory.train_loss[-1], trajectory.test_accuracy[-1])
    trajectory.images_per_second = seen / max(time.perf_counter() - started, 1e-9)
    stacked = torch.stack(snapshots)  # [epochs + 1, P]
    for name, piece, shape in zip(flat.names, stacked.split(flat.numels, dim=1), flat.shapes):
        trajectory.params[name] = piece.reshape(len(stacked), *shape).contiguous()
    return trajectory


def train_experts_stacked(models: list[nn.Module], recipe: ExpertRecipe, train_images: torch.Tensor,
                          train_labels: torch.Tensor, test_images: torch.Tensor, test_labels: torch.Tensor,
                          generators: list[torch.Generator],
                          on_epoch: Callable[[int, int, float, float], None] | None = None) -> list[Trajectory]:
    """`train_expert` for several models (one architecture, their own initialisations) at once, in one
    vmapped pass per minibatch (`distill.stacked`); one trajectory each, equal to separate
    `train_expert` calls up to float round-off. `generators[k]` drives model k's order and augmentation;
    `on_epoch(k, epoch, train_loss, test_accuracy)` is called per model after each epoch."""
    stack = Stack(models)
    optimizer = torch.optim.SGD(list(stack.params.values()), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    snapshots = [[stack.flat(k)] for k in range(stack.count)]
    trajectories = [Trajectory(params={}) for _ in range(stack.count)]
    n = len(train_images)
    started = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        total = stacked_epoch(stack, optimizer, [train_images] * stack.count, [train_labels] * stack.count,
                              recipe.batch_size, generators, recipe.augmentation, recipe.gsam)
        accuracies = stacked_accuracies(stack, test_images, test_labels)
        for k in range(stack.count):
            snapshots[k].append(stack.flat(k))
            trajectories[k].train_loss.append(float(total[k]) / n)
            trajectories[k].test_accuracy.append(accuracies[k])
            if on_epoch is not None:
                on_epoch(k, epoch, trajectories[k].train_loss[-1], accuracies[k])
    rate = n * recipe.epochs / max(time.perf_counter() - started, 1e-9)  # images per second, per model
    numels = [stack.params[name][0].numel() for name in stack.names]
    for k, trajectory in enumerate(trajectories):
        stacked = torch.stack(snapshots[k])  # [epochs + 1, P]
        for name, piece in zip(stack.names, stacked.split(numels, dim=1)):
            trajectory.params[name] = piece.reshape(len(stacked), *stack.params[name].shape[1:]).contiguous()
        trajectory.images_per_second = rate
    return trajectories
