"""GSAM (surrogate-gap guided sharpness-aware minimisation) gradient, as DATM's experts use it."""

from __future__ import annotations

from typing import Callable

import torch


def gsam_gradients(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], rho: float, alpha: float,
                   adaptive: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients to step along, and the loss at the unperturbed point.

    1. g = grad of loss at w.  2. Perturb w by e = rho * s * g / ||s * g|| with s = |w| (adaptive) or 1,
    i.e. e = rho * w^2 * g / || |w| g || in the adaptive case.  3. g_s = grad at w + e; restore w.
    4. Remove alpha times the part of g orthogonal to g_s: g_s - alpha * (g - cos * ||g|| * g_s / ||g_s||).
    """
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        scaled = [(p.abs() * g) if adaptive else g for p, g in zip(params, grads)]
        norm = torch.sqrt(sum((s * s).sum() for s in scaled)) + 1e-12
        perturb = [rho * (p * p * g if adaptive else g) / norm for p, g in zip(params, grads)]
        for p, e in zip(params, perturb):
            p.add_(e)
    perturbed_grads = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, e in zip(params, perturb):
            p.sub_(e)
        inner = sum((g * gs).sum() for g, gs in zip(grads, perturbed_grads))
        norm_g = torch.sqrt(sum((g * g).sum() for g in grads)) + 1e-12
        norm_gs = torch.sqrt(sum((gs * gs).sum() for gs in perturbed_grads)) + 1e-12
        cosine = inner / (norm_g * norm_gs)
        out = [gs - alpha * (g - cosine * norm_g * gs / norm_gs) for g, gs in zip(grads, perturbed_grads)]
    return out, loss.detach()
