"""Mixed precision: a network's convolutions and matrix products in bfloat16 under `torch.autocast`.

Parameters, optimiser state, losses and everything the matching gradient accumulates stay in their own
dtype (float32); only the operations autocast lists as safe in low precision run in bfloat16. About 2x
faster where the hardware has bfloat16 arithmetic (recent GPUs; CPUs with AVX512-BF16 or AMX), slower
where it has not. Not exact: one student step's gradient differs from float32's by a few per cent
(`results/mixed_precision.md`), so it is an option, never a default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """A bfloat16 `torch.autocast` context for `device`'s type when `enabled`, else one that does nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def mixed_forward(forward: Forward | nn.Module, enabled: bool) -> Forward:
    """`forward` (images x [B, C, H, W] -> logits [B, K]) run under bfloat16 autocast when `enabled`, its
    logits returned in x's dtype, so that the loss and its softmax are computed in full precision."""
    if not enabled:
        return forward

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, True):
            logits = forward(x)
        return logits.to(x.dtype)

    return run
