"""K networks trained at once: their parameters stacked along a leading dimension and one vmapped
forward/backward per minibatch step (`torch.func.stack_module_state` + `vmap`).

Each network keeps its own generator, so its data order and augmentation are drawn exactly as the
one-network loops (`train_expert`, `train_on_set`) draw them: the results equal K separate runs up
to float round-off (batched convolutions sum in another order). Used for experts
(`buffers.parallel`) and evaluation repeats (`eval.parallel`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from distill.data.augment import dsa
from distill.matching.loss import soft_cross_entropy


def _per_model_norm(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """sqrt of the sum of squares over every tensor, per leading index: [K]."""
    total = sum(t.reshape(len(t), -1).pow(2).sum(1) for t in tensors.values())
    return torch.sqrt(total) + 1e-12


def _expand(scalar: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scalar.view(-1, *([1] * (like.ndim - 1)))


def stacked_gsam(
    params: dict[str, torch.Tensor],
    grads_at: Callable[[dict[str, torch.Tensor]], tuple[dict, torch.Tensor]],
    rho: float,
    alpha: float,
    adaptive: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """GSAM (`distill.buffers.gsam.gsam_gradients`) for K stacked models, every norm and cosine per model.

    params[name]: [K, *shape]; grads_at(params) -> (grads like params, losses [K]). Returns the
    gradients to step along and the losses at the unperturbed point.
    """
    grads, losses = grads_at(params)
    with torch.no_grad():
        scaled = {n: (params[n].abs() * g) if adaptive else g for n, g in grads.items()}
        norm = _per_model_norm(scaled)
        perturbed = {
            n: params[n] + rho * ((params[n] * params[n] * g) if adaptive else g) / _expand(norm, g)
            for n, g in grads.items()
        }
    grads_s, _ = grads_at(perturbed)
    with torch.no_grad():
        inner = sum((grads[n] * grads_s[n]).reshape(len(losses), -1).sum(1) for n in grads)
        norm_g, norm_s = _per_model_norm(grads), _per_model_norm(grads_s)
        cosine = inner / (norm_g * norm_s)
        out = {
            n: grads_s[n] - alpha * (grads[n] - _expand(cosine * norm_g / norm_s, grads[n]) * grads_s[n]) for n in grads
        }
    return out, losses


@torch.no_grad()
def stacked_accuracies(stack: Stack, images: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> list[float]:
    """Top-1 accuracy of each stacked model on images [N, C, H, W] with labels [N] (eval mode, then restored)."""
    stack.base.eval()
    params = {k: v.detach() for k, v in stack.params.items()}
    correct = torch.zeros(stack.count, dtype=torch.float64, device=images.device)
    forward = vmap(lambda p, b, x: functional_call(stack.base, (p, b), (x,)), in_dims=(0, 0, None))
    for i in range(0, len(images), chunk):
        # standard strides: a 1-channel batch can look channels-last, which vmapped convolutions cannot query
        x = images[i : i + chunk].clone(memory_format=torch.contiguous_format)
        correct += (forward(params, stack.buffers, x).argmax(2) == labels[i : i + chunk]).sum(1)
    stack.base.train()
    return (correct / max(len(images), 1)).tolist()


class Stack:
    """K models of one architecture as stacked parameters (leaves [K, *shape], for one optimiser) and
    buffers, with a vmapped loss-and-gradient step (soft cross-entropy for probability targets)."""

    def __init__(self, models: list[nn.Module]):
        self.count = len(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        self.params, self.buffers = stack_module_state(models)
        self.names = list(self.params)

        def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = functional_call(self.base, (p, b), (x,))
            return soft_cross_entropy(logits, y) if y.is_floating_point() else F.cross_entropy(logits, y)

        self._step = vmap(grad_and_value(loss), in_dims=(0, 0, 0, 0))

    def grads(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Per-model gradients (like params) and losses [K] at `params` for batches x [K, B, ...], y [K, B(, K)]."""
        return self._step(params, self.buffers, x, y)

    def flat(self, k: int) -> torch.Tensor:
        """Model k's parameters as one detached CPU vector [P]."""
        return torch.cat([self.params[n][k].detach().reshape(-1) for n in self.names]).cpu()


def stacked_epoch(
    stack: Stack,
    optimizer: torch.optim.Optimizer,
    images: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    batch_size: int,
    generators: Sequence[torch.Generator],
    strategy: str,
    gsam=None,
) -> torch.Tensor:
    """One pass of every model over its own data (images[k] [N, C, H, W], targets[k] [N] or [N, K]) in
    minibatches drawn from its own generator (order, then DSA per batch: as one model's loop draws).
    `gsam`: GSAM settings (enabled, rho, alpha, adaptive) or None. Returns each model's summed loss [K]."""
    n = len(images[0])
    device = images[0].device
    orders = [torch.randperm(n, generator=g).to(device) for g in generators]
    total = torch.zeros(stack.count, device=device)
    for start in range(0, n, batch_size):
        batches = [order[start : start + batch_size] for order in orders]
        x = torch.stack([dsa(im[b], g, strategy) for im, b, g in zip(images, batches, generators)])
        y = torch.stack([t[b] for t, b in zip(targets, batches)])
        params = {k: v.detach() for k, v in stack.params.items()}
        if gsam is not None and gsam.enabled:
            grads, losses = stacked_gsam(params, lambda p: stack.grads(p, x, y), gsam.rho, gsam.alpha, gsam.adaptive)
        else:
            grads, losses = stack.grads(params, x, y)
        for name in stack.names:
            stack.params[name].grad = grads[name]
        optimizer.step()
        total += losses.detach() * y.shape[1]
    return total
