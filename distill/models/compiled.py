"""A network's training steps through a `torch.compile`d forward, eager whenever compiling fails.

Used by the first-order training loops (experts, evaluation networks, the validation checks of a
distillation run) when `Config.compile_training` is on. Augmentation stays outside: only the network's
forward (and, through AOTAutograd, its backward) is compiled, once per batch shape, and a new network of
the same architecture reuses the compiled code. The results equal eager training up to float round-off.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from distill.models.precision import mixed_forward

Result = TypeVar("Result")
Forward = Callable[[torch.Tensor], torch.Tensor]


class TrainingForward:
    """Runs training steps of `model` with its forward compiled (`compiled=True`) or eager.

    `step(body)` calls `body(forward)`, where `forward(x)` is the network's forward; `body` computes the
    loss, its backward (gradients into the parameters' `.grad`) and returns what it likes. When a
    compiled step raises (no C++ compiler, an op the compiler cannot take, an old torch), the gradients
    are cleared, the step runs again eagerly, and every later step stays eager, after one warning line.
    `backend` is torch.compile's (tests use a failing one). `mixed_precision=True` runs the forward under
    bfloat16 autocast (`distill.models.precision`), compiled or not.
    """

    def __init__(
        self,
        model: nn.Module,
        compiled: bool = True,
        backend: str | Callable = "inductor",
        mixed_precision: bool = False,
    ):
        self.model = model
        self.mixed_precision = mixed_precision
        self._compiled: Forward | None = None
        if compiled:
            try:
                self._compiled = torch.compile(model, dynamic=False, backend=backend)
            except Exception as exc:  # noqa: BLE001 - e.g. a Python this torch cannot compile for
                _warn(exc)

    def _compiled_forward(self, x: torch.Tensor) -> torch.Tensor:
        # the compiled code is specialised to its input's strides, and augmentation returns batches whose
        # size-1 dimensions (one channel) carry varying strides: copied to the standard ones, a run needs one
        # graph per batch size, not several, and stays under dynamo's limit of graphs per function
        return self._compiled(x.clone(memory_format=torch.contiguous_format))

    @property
    def compiled(self) -> bool:
        """Whether steps run compiled (False when off, or after a fallback)."""
        return self._compiled is not None

    def step(self, body: Callable[[Forward], Result]) -> Result:
        """`body(forward)`: compiled when it can be, else eagerly (see the class)."""
        eager = mixed_forward(self.model, self.mixed_precision)
        if self._compiled is None:
            return body(eager)
        try:
            return body(mixed_forward(self._compiled_forward, self.mixed_precision))
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: train eagerly instead
            _warn(exc)
            self._compiled = None
            for p in self.model.parameters():
                p.grad = None  # a backward that failed half-way may have left partial gradients
            return body(eager)


def compile_failure(exc: BaseException) -> str:
    """'<type>: <first line of the message>' of the error behind a failed torch.compile call (the
    compiler's own error, not the wrapper dynamo raises around it), for a one-line warning."""
    cause = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    reason = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {reason}"


def _warn(exc: BaseException) -> None:
    warnings.warn(
        f"torch.compile failed for a training step ({compile_failure(exc)}); training eagerly",
        RuntimeWarning,
        stacklevel=3,
    )
