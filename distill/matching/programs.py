"""One inner step of the student as two pure torch.func programs, optionally compiled with torch.compile.

* `gradient(w, x, p) -> g`: the first-order gradient of the inner soft cross-entropy at flat
  parameters w [P], augmented images x [B, C, H, W] and target probabilities p [B, K].
* `adjoint(w, x, p, a) -> (g, a.dg/dw, a.dg/dx, a.dg/dp)`: the same gradient and its vector-Jacobian
  product with an adjoint a [P] (reverse-over-reverse: a Hessian-vector product and the mixed
  image / target terms), i.e. everything one reverse step of the memory-flat engine needs.

Augmentation stays outside: DSA picks an op group per step from data (a compiled graph per group
would multiply compilations), so callers augment eagerly and differentiate through it eagerly.
Shapes are static within a run, so each program compiles once per batch shape and dtype.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.func import grad, vjp

from distill.matching.loss import soft_cross_entropy
from distill.models.compiled import compile_failure
from distill.models.flat import FlatModel


def graph_bytes(output: torch.Tensor) -> int:
    """Bytes of the distinct tensors that `output`'s autograd graph keeps for its backward: a compiled
    program's residuals, or every saved input and result of an eager graph (storages counted once)."""
    seen_nodes, storages, total = set(), set(), 0
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        saved = list(getattr(node, "saved_tensors", None) or ())
        saved += [getattr(node, name) for name in dir(node) if name.startswith("_saved_")]
        for t in saved:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in storages:
                storages.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return total


def on_cuda(student: FlatModel) -> bool:
    """Whether the student's parameters live on a CUDA device (its programs can replay CUDA graphs)."""
    return any(p.is_cuda for p in student.module.parameters())


class StepPrograms:
    """The `gradient` and `adjoint` programs of one student (see the module docstring).

    `compile=True` runs them through `torch.compile` (`backend` is torch.compile's; "aot_eager" traces
    the same graphs without generating code: quick to build, for tests); the first time compiling or
    a compiled call fails (old torch, no C++ compiler, an op the compiler cannot take), both programs
    fall back to eager for good, with one warning line. `compile=False` runs them eagerly.
    `cuda_graphs=True` (Inductor only) also replays each compiled program as a CUDA graph
    (`mode="reduce-overhead"`): on a GPU a student step is a few hundred small kernels, so launching
    them one by one costs more than running them. Only for callers that use each output before the
    next call (the replay overwrites it) and keep no graph for backward.
    """

    def __init__(
        self,
        student: FlatModel,
        compile: bool = True,
        backend: str | Callable = "inductor",
        cuda_graphs: bool = False,
    ):
        def inner_loss(w: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return soft_cross_entropy(student.pure(w, x), p)

        gradient = grad(inner_loss)

        def adjoint(w: torch.Tensor, x: torch.Tensor, p: torch.Tensor, a: torch.Tensor):
            g, pullback = vjp(gradient, w, x, p)
            return (g, *pullback(a))

        self._eager = {"gradient": gradient, "adjoint": adjoint}
        options = {"mode": "reduce-overhead"} if cuda_graphs and backend == "inductor" else {}
        self._compiled = (
            {
                name: torch.compile(fn, fullgraph=True, dynamic=False, backend=backend, **options)
                for name, fn in self._eager.items()
            }
            if compile
            else None
        )

    @property
    def compiled(self) -> bool:
        """Whether the programs run compiled (False after a fallback)."""
        return self._compiled is not None

    def gradient(self, w: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """g = d CE(f(x; w), p) / dw [P] for w [P], x [B, C, H, W], p [B, K]."""
        return self._run("gradient", w, x, p)

    def gradient_kept(self, w: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(g [P], bytes): `gradient` for inputs that require grad, with the graph to back-propagate g into
        them kept (a compiled program keeps its residuals), and how many bytes that graph holds."""
        g = self._run("gradient", w, x, p)
        return g, graph_bytes(g)

    def adjoint(
        self, w: torch.Tensor, x: torch.Tensor, p: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(g [P], a.dg/dw [P], a.dg/dx [B, C, H, W], a.dg/dp [B, K]) for an adjoint a [P]."""
        return self._run("adjoint", w, x, p, a)

    def _run(self, name: str, *args):
        if self._compiled is None:
            return self._eager[name](*args)
        try:
            return self._compiled[name](*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly instead
            warnings.warn(
                f"torch.compile failed for the {name} program ({compile_failure(exc)}); running the engine eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            self._compiled = None
            return self._eager[name](*args)
