"""GSAM (surrogate-gap guided sharpness-aware minimisation) gradient, as DATM's experts use it."""

from __future__ import annotations

from typing import Callable

import torch


def gsam_gradients(
    params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], rho: float, alpha: float, adaptive: bool = True
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients to step along, and the loss at the unperturbed point.

    1. g = grad of loss at w.  2. Perturb w by e = rho * s * g / ||s * g|| with s = |w| (adaptive) or 1,
    i.e. e = rho * w^2 * g / || |w| g || in the adaptive case.  3. g_s = grad at w + e; restore w.
    4. Remove alpha times the part of g orthogonal to g_s: g_s - alpha * (g - cos * ||g|| * g_s / ||g_s||).
    """
    params = list(params)
    loss = loss_fn()
    grads = list(torch.autograd.grad(loss, params))
    with torch.no_grad():
        # one fused kernel per step over all parameters (torch._foreach_*), not one per parameter
        scaled = torch._foreach_mul(torch._foreach_abs(params), grads) if adaptive else grads
        norm = _global_norm(scaled) + 1e-12
        perturb = (
            torch._foreach_mul(torch._foreach_mul(params, params), grads)
            if adaptive
            else torch._foreach_mul(grads, 1.0)
        )
        torch._foreach_mul_(perturb, rho / norm)
        torch._foreach_add_(params, perturb)
    perturbed_grads = list(torch.autograd.grad(loss_fn(), params))
    with torch.no_grad():
        torch._foreach_sub_(params, perturb)
        inner = torch.stack([t.sum() for t in torch._foreach_mul(grads, perturbed_grads)]).sum()
        norm_g, norm_gs = _global_norm(grads) + 1e-12, _global_norm(perturbed_grads) + 1e-12
        cosine = inner / (norm_g * norm_gs)
        # g_s - alpha * (g - cos * |g| / |g_s| * g_s)
        out = torch._foreach_sub(grads, torch._foreach_mul(perturbed_grads, cosine * norm_g / norm_gs))
        torch._foreach_mul_(out, -alpha)
        torch._foreach_add_(out, perturbed_grads)
    return out, loss.detach()


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """sqrt of the sum of squares over all `tensors`."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
