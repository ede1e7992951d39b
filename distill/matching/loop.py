"""The distillation loop: one expert and one start epoch per iteration, matched through the unroll."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from distill.errors import DistillError
from distill.matching.settings import DistillSettings
from distill.matching.spread import spread_over
from distill.matching.unroll import MatchResult, Shard, UnrollPlan, make_engine, make_plan
from distill.matching.window import sample_start_epoch, upper_bound
from distill.models.flat import FlatModel


class ExpertSource(Protocol):
    """What the loop needs from a buffer: the number of experts, their epochs, (expert, epoch) -> flat vector."""

    epochs: int

    def __len__(self) -> int: ...

    def params(self, k: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor: ...


class SkipLimitReached(DistillError):
    """`max_consecutive_skips` updates in a row were skipped; the set is still the last good one."""


@dataclass
class StepRecord:
    """What one iteration did."""

    iteration: int
    expert: int
    start_epoch: int
    upper_bound: int
    loss: float
    skipped: str | None  # None when the update was taken, else why it was skipped
    syn_lr: float
    seconds: float


class Distiller:
    """Holds the synthetic set (images, label logits, student lr), its optimisers and RNG; `step()` advances it.

    images [N, C, H, W] and classes [N] are class-major; label_logits [N, K] are learned when
    `settings.soft_labels`, else the student trains on one-hot targets of `classes`. Under torchrun
    every rank holds the same state and `shard` says which slice of each minibatch it computes:
    the ranks take identical steps.
    """

    def __init__(
        self,
        settings: DistillSettings,
        experts: ExpertSource,
        student: FlatModel,
        images: torch.Tensor,
        label_logits: torch.Tensor,
        syn_lr: float,
        classes: torch.Tensor,
        num_classes: int,
        seed: int,
        shard: Shard = Shard(),
    ):
        self.settings, self.experts, self.student = settings, experts, student
        self.spread = spread_over(shard, settings.trajectories_per_iteration)
        self.engine = make_engine(settings.engine, student, self.spread.shard, settings.memory_budget)
        self.device = images.device
        self.images = images.detach().clone().requires_grad_(True)
        self.label_logits = label_logits.detach().clone().requires_grad_(settings.soft_labels)
        self.syn_lr = torch.tensor(float(syn_lr), dtype=images.dtype, device=self.device, requires_grad=True)
        self.classes = classes
        self.hard_targets = None if settings.soft_labels else F.one_hot(classes, num_classes).to(images.dtype)
        self.opt_images = torch.optim.SGD([self.images], lr=settings.lr_img, momentum=settings.momentum_img)
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=settings.lr_lr, momentum=settings.momentum_lr)
        self.opt_labels = torch.optim.SGD([self.label_logits], lr=settings.lr_y, momentum=settings.momentum_y)
        self.generator = torch.Generator().manual_seed(seed)
        self.expert_order = torch.randperm(len(experts), generator=self.generator)
        self.expert_cursor = 0
        self.iteration = 0
        self.skipped = 0
        self.consecutive_skips = 0
        self.last_eval = -1
        self.best: dict = {"score": -math.inf, "iteration": -1}
        self.best_set: dict[str, torch.Tensor] | None = None
        self.checks: list[tuple[int, float]] = []  # every recorded score: (iteration, score), in order

    def next_expert(self) -> int:
        """The next expert of a shuffled pass over the buffer; a new shuffle once all were used."""
        if self.expert_cursor >= len(self.expert_order):
            self.expert_order = torch.randperm(len(self.experts), generator=self.generator)
            self.expert_cursor = 0
        k = int(self.expert_order[self.expert_cursor])
        self.expert_cursor += 1
        return k

    def draw(self) -> tuple[int, int, UnrollPlan]:
        """The next trajectory sample: (expert, start epoch t, the unroll's minibatches and augmentation)."""
        s = self.settings
        k = self.next_expert()
        t = sample_start_epoch(s.window, self.iteration, self.generator)
        plan = make_plan(len(self.images), s.batch_syn, s.syn_steps, self.generator, s.augmentation)
        return k, t, plan.on(self.device, *self.images.shape[-2:])

    def match(self, k: int, t: int, plan: UnrollPlan) -> MatchResult | None:
        """The matching loss and its gradients for one sample; None when the expert's vectors are not finite."""
        s = self.settings
        start = self.experts.params(k, t, self.device).to(self.images.dtype)
        target = self.experts.params(k, t + s.expert_epochs, self.device).to(self.images.dtype)
        if not (torch.isfinite(start).all() and torch.isfinite(target).all()):
            return None
        return self.engine(
            start,
            target,
            self.images,
            self.label_logits if s.soft_labels else None,
            self.hard_targets,
            self.syn_lr,
            plan,
        )

    def zero_result(self) -> MatchResult:
        """A MatchResult of zeros shaped like the engine's."""
        zero = torch.zeros((), dtype=self.images.dtype, device=self.device)
        labels = torch.zeros_like(self.label_logits) if self.settings.soft_labels else None
        return MatchResult(zero, torch.zeros_like(self.images), labels, zero.clone())

    def apply(self, result: MatchResult) -> None:
        """Step the images, the lr and (soft labels) the label logits along `result`'s gradients."""
        self.images.grad, self.syn_lr.grad = result.grad_images, result.grad_lr
        self.opt_images.step()
        self.opt_lr.step()
        if self.settings.soft_labels:
            self.label_logits.grad = result.grad_labels
            self.opt_labels.step()
        with torch.no_grad():
            # the reference lets the learned lr go negative; a clamp keeps SGD on it otherwise unchanged
            self.syn_lr.clamp_(min=self.settings.min_syn_lr)

    def step(self) -> StepRecord:
        """One iteration: draw `trajectories_per_iteration` (expert, t) samples (1 = the paper), unroll N
        student steps from each, match theta*_{t+M}; update along the mean gradient unless skipped."""
        s = self.settings
        started = time.perf_counter()
        samples = [self.draw() for _ in range(s.trajectories_per_iteration)]  # every rank draws all of them
        result = self.spread.combine([self.match(*samples[i]) for i in self.spread.mine()], self.zero_result())
        reason, loss = None, torch.tensor(float("nan"))
        if result is None:
            reason = "expert parameters not finite"
        else:
            loss = result.loss
            grads = [result.grad_images, result.grad_lr] + ([result.grad_labels] if s.soft_labels else [])
            if not torch.isfinite(loss):
                reason = "loss not finite"
            elif float(loss) > s.threshold:
                reason = f"loss above threshold {s.threshold}"
            elif not all(torch.isfinite(g).all() for g in grads):
                reason = "gradient not finite"
        if reason is None:
            self.apply(result)
            self.consecutive_skips = 0
        else:
            self.skipped += 1
            self.consecutive_skips += 1
        k, t, _ = samples[0]
        record = StepRecord(
            self.iteration,
            k,
            t,
            upper_bound(s.window, self.iteration),
            float(loss),
            reason,
            float(self.syn_lr.detach()),
            time.perf_counter() - started,
        )
        self.iteration += 1
        if self.consecutive_skips >= s.max_consecutive_skips:
            raise SkipLimitReached(f"{self.consecutive_skips} updates in a row were skipped (last: {reason})")
        return record

    def current_set(self) -> dict[str, torch.Tensor]:
        """Detached copies: images [N, C, H, W], label_logits [N, K], lr [], classes [N]."""
        labels = self.label_logits if self.settings.soft_labels else self.hard_targets
        return {
            "images": self.images.detach().clone(),
            "label_logits": labels.detach().clone(),
            "lr": self.syn_lr.detach().clone(),
            "classes": self.classes.detach().clone(),
        }

    def record_score(self, score: float) -> bool:
        """Add `score` to `checks` and keep the current set as the best if it beats the best so far;
        returns whether it did."""
        self.checks.append((self.iteration, float(score)))
        if score > self.best["score"]:
            self.best = {"score": float(score), "iteration": self.iteration}
            self.best_set = self.current_set()
            return True
        return False

    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically (tensors on CPU, plain Python otherwise)."""
        cpu = lambda t: t.detach().cpu().clone()  # noqa: E731
        return {
            "images": cpu(self.images),
            "label_logits": cpu(self.label_logits),
            "syn_lr": cpu(self.syn_lr),
            "opt_images": self.opt_images.state_dict(),
            "opt_lr": self.opt_lr.state_dict(),
            "opt_labels": self.opt_labels.state_dict(),
            "generator": self.generator.get_state(),
            "expert_order": self.expert_order.clone(),
            "expert_cursor": self.expert_cursor,
            "iteration": self.iteration,
            "skipped": self.skipped,
            "consecutive_skips": self.consecutive_skips,
            "last_eval": self.last_eval,
            "best": dict(self.best),
            "checks": [[i, s] for i, s in self.checks],
            "best_set": {k: cpu(v) for k, v in self.best_set.items()} if self.best_set else None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`."""
        with torch.no_grad():
            self.images.copy_(state["images"])
            self.label_logits.copy_(state["label_logits"])
            self.syn_lr.copy_(state["syn_lr"])
        self.opt_images.load_state_dict(state["opt_images"])
        self.opt_lr.load_state_dict(state["opt_lr"])
        self.opt_labels.load_state_dict(state["opt_labels"])
        self.generator.set_state(state["generator"])
        self.expert_order = state["expert_order"].clone()
        self.expert_cursor = int(state["expert_cursor"])
        self.iteration = int(state["iteration"])
        self.skipped = int(state["skipped"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.last_eval = int(state["last_eval"])
        self.best = dict(state["best"])
        self.checks = [(int(i), float(s)) for i, s in state.get("checks", [])]  # absent before checks were kept
        self.best_set = {k: v.to(self.device) for k, v in state["best_set"].items()} if state["best_set"] else None


def run_loop(
    distiller: Distiller,
    iterations: int,
    eval_every: int,
    evaluate: Callable[[dict], float] | None,
    checkpoint: Callable[[Distiller], None],
    checkpoint_every: int,
    on_step: Callable[[StepRecord], None] = lambda r: None,
    on_eval: Callable[[int, float, bool], None] = lambda it, score, best: None,
    evaluate_initial: bool = True,
) -> Distiller:
    """Advance `distiller` to `iterations`, evaluating the current set every `eval_every` iterations
    (before that iteration's update, and once at the end; with `evaluate_initial` also the set it
    starts from at iteration 0) and checkpointing every `checkpoint_every`.

    `evaluate(set) -> score` scores a `current_set()`; the best-scoring set is kept in the distiller.
    """
    evaluating = evaluate is not None and eval_every > 0

    def maybe_evaluate() -> None:
        if distiller.last_eval == distiller.iteration:
            return
        score = evaluate(distiller.current_set())
        distiller.last_eval = distiller.iteration
        on_eval(distiller.iteration, score, distiller.record_score(score))

    while distiller.iteration < iterations:
        if evaluating and distiller.iteration % eval_every == 0 and (distiller.iteration > 0 or evaluate_initial):
            maybe_evaluate()
        on_step(distiller.step())
        if distiller.iteration % checkpoint_every == 0 or distiller.iteration == iterations:
            checkpoint(distiller)
    if evaluating:
        maybe_evaluate()
        checkpoint(distiller)
    return distiller
