"""Calling a model from one flat parameter vector, with a stable parameter order and names."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from distill.models.precision import autocast


class FlatModel:
    """Wraps a module so that `flat_model(flat, x)` runs it with parameters taken from `flat` [P].

    The order is `module.named_parameters()` order; buffers (e.g. batch-norm statistics) stay in the
    module. Gradients flow from the output back to `flat`. `mixed_precision=True` runs the module under
    bfloat16 autocast (`distill.models.precision`) and returns its logits in `flat`'s dtype.
    """

    def __init__(self, module: nn.Module, mixed_precision: bool = False):
        self.module = module
        self.mixed_precision = mixed_precision
        named = list(module.named_parameters())
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)

    def flatten(self) -> torch.Tensor:
        """The module's current parameters as one detached vector [P]."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of `flat` [P] keyed by parameter name, each with its parameter's shape."""
        if flat.shape != (self.num_params,):
            raise ValueError(f"expected a flat vector of {self.num_params} parameters, got {tuple(flat.shape)}")
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, flat.split(self.numels), self.shapes)}

    def load(self, flat: torch.Tensor) -> None:
        """Copy `flat` [P] into the module's parameters."""
        with torch.no_grad():
            for param, value in zip(self.module.parameters(), self.unflatten(flat).values()):
                param.copy_(value)

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes] of images x [B, C, H, W] under parameters `flat` [P]."""
        with autocast(x.device, self.mixed_precision):
            logits = functional_call(self.module, self.unflatten(flat), (x,))
        return logits.to(flat.dtype)

    def pure(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Like calling the model, but on copies of its buffers, so nothing is mutated (batch-norm
        running statistics stay as they were): a pure function, as torch.func transforms need."""
        buffers = {name: b.clone() for name, b in self.module.named_buffers()}
        with autocast(x.device, self.mixed_precision):
            logits = functional_call(self.module, {**self.unflatten(flat), **buffers}, (x,))
        return logits.to(flat.dtype)
