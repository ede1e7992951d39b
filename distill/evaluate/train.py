"""Training a fresh network on a resident set under a protocol, and testing it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from distill.buffers.recipe import accuracy
from distill.data.augment import dsa
from distill.evaluate.protocol import Protocol, decay_epoch, lr_at_epoch
from distill.matching.loss import soft_cross_entropy
from distill.models.compiled import TrainingForward
from distill.stacked import Stack, stacked_accuracies, stacked_epoch


def set_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy for probability targets [B, K], plain cross-entropy for class indices [B]."""
    return soft_cross_entropy(logits, targets) if targets.is_floating_point() else F.cross_entropy(logits, targets)


def set_targets(synthetic: dict, label_mode: str) -> torch.Tensor:
    """Training targets of a set: softmax probabilities [N, K] ('soft') or argmax classes [N] ('hard')."""
    logits = synthetic["label_logits"]
    return torch.softmax(logits, dim=1) if label_mode == "soft" else logits.argmax(1)


def train_on_set(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    protocol: Protocol,
    lr: float,
    generator: torch.Generator,
    epochs: int | None = None,
    on_pass: Callable[[], None] | None = None,
    compiled: bool = False,
    mixed_precision: bool = False,
) -> float:
    """Train `model` in place on images [N, C, H, W] with targets (probabilities [N, K] or classes [N]).

    SGD(lr, momentum, weight decay) for epochs + 1 passes (as the reference); after pass
    epochs // 2 + 1 the lr drops x0.1 and the optimiser is re-created (momentum reset). DSA on every
    batch. All randomness from `generator`; `on_pass()` after each pass (progress). `compiled=True`
    runs the network through torch.compile (`TrainingForward`: the same training to float round-off),
    `mixed_precision=True` under bfloat16 autocast (`distill.models.precision`: not exact).
    Returns the last pass's mean training loss.
    """
    epochs = protocol.epochs if epochs is None else epochs
    n = len(images)
    model.train()
    network = TrainingForward(model, compiled, mixed_precision=mixed_precision)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )
    last_loss = torch.zeros((), device=images.device)
    for epoch in range(epochs + 1):
        if epoch == decay_epoch(epochs) + 1:
            optimizer = torch.optim.SGD(
                model.parameters(),
                lr=lr_at_epoch(epoch, lr, epochs),
                momentum=protocol.momentum,
                weight_decay=protocol.weight_decay,
            )
        order = torch.randperm(n, generator=generator).to(images.device)
        last_loss = torch.zeros((), device=images.device)
        for start in range(0, n, protocol.batch_size):
            batch = order[start : start + protocol.batch_size]
            x = dsa(images[batch], generator, protocol.augmentation)

            def backward(forward, x=x, batch=batch) -> torch.Tensor:
                loss = set_loss(forward(x), targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                return loss

            loss = network.step(backward)
            optimizer.step()
            last_loss += loss.detach() * len(batch)
        if on_pass is not None:
            on_pass()
    return float(last_loss) / n


def train_and_test(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    protocol: Protocol,
    lr: float,
    seed: int,
    epochs: int | None = None,
    on_pass: Callable[[], None] | None = None,
    compiled: bool = False,
    mixed_precision: bool = False,
) -> float:
    """Train `model` on the set (see `train_on_set`, `compiled` and `mixed_precision` too) with randomness
    from `seed`; return test accuracy (the test pass in full precision)."""
    generator = torch.Generator().manual_seed(seed)
    train_on_set(model, images, targets, protocol, lr, generator, epochs, on_pass, compiled, mixed_precision)
    return accuracy(model, test_images, test_labels)


def train_and_test_stacked(
    models: list[nn.Module],
    images: list[torch.Tensor],
    targets: list[torch.Tensor],
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    protocol: Protocol,
    lr: float,
    seeds: list[int],
    epochs: int | None = None,
    on_pass: Callable[[], None] | None = None,
) -> list[float]:
    """`train_and_test` for several models at once (one architecture; model k trains on images[k],
    targets[k] with randomness from seeds[k]) in one vmapped pass per minibatch; returns their test
    accuracies, equal to separate `train_and_test` calls up to float round-off. `on_pass()` after each
    pass of all models together."""
    epochs = protocol.epochs if epochs is None else epochs
    stack = Stack(models)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def sgd(rate: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            list(stack.params.values()), lr=rate, momentum=protocol.momentum, weight_decay=protocol.weight_decay
        )

    optimizer = sgd(lr)
    for epoch in range(epochs + 1):
        if epoch == decay_epoch(epochs) + 1:
            optimizer = sgd(lr_at_epoch(epoch, lr, epochs))
        stacked_epoch(stack, optimizer, images, targets, protocol.batch_size, generators, protocol.augmentation)
        if on_pass is not None:
            on_pass()
    return stacked_accuracies(stack, test_images, test_labels)
