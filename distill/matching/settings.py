"""Every setting of a distillation run (the config's `distill` section), with its allowed range."""

from __future__ import annotations

from dataclasses import dataclass

from distill import checks
from distill.data.augment import DEFAULT_STRATEGY, parse_strategy
from distill.matching.window import Window, required_epochs

ENGINES = ("compiled", "auto", "flat", "plain")
PIX_INITS = ("real", "correct", "noise")
SELECTIONS = ("validation", "test")


@dataclass
class DistillSettings:
    """The synthetic set, the window of start epochs (docs/method.md §3), the three optimisers, the
    inner loop, and the run's bookkeeping. Defaults are DATM's; `method=mtt` settings are MTT's
    (one-hot labels, real init, no window growth, no threshold: configs/method/mtt.yaml)."""

    method: str = "datm"  # a name for the results tables (datm, mtt, ...)
    ipc: int = 10
    iterations: int = 200
    syn_steps: int = 20  # N: student steps per iteration
    trajectories_per_iteration: int = 1  # (expert, t) samples whose gradients are averaged per update (1 = paper)
    expert_epochs: int = 2  # M: the target is the expert at epoch t + M
    min_start_epoch: int = 0  # T-
    current_max_start_epoch: int = 10  # T: upper bound of the window at iteration 0 (sequential generation)
    max_start_epoch: int = 15  # T+
    sequential_generation: bool = True
    expansion_end_iteration: int = 150  # E: the window reaches T+ at this iteration
    lr_img: float = 100.0
    lr_lr: float = 1e-5
    lr_y: float = 2.0
    momentum_img: float = 0.5
    momentum_lr: float = 0.5
    momentum_y: float = 0.9
    lr_teacher: float = 0.01  # initial student learning rate (learned)
    min_syn_lr: float = 1e-6  # the learned lr is clamped here after every step (kept positive)
    batch_syn: int | None = None  # None = the whole synthetic set every step
    threshold: float = 1.0  # skip the update when the matching loss is above this (or not finite)
    pix_init: str = "correct"  # real | correct | noise
    soft_labels: bool = True  # False = MTT: fixed one-hot labels
    label_init_experts: int | None = None  # how many experts average the initial logits (None = all)
    engine: str = "compiled"  # compiled | auto | flat | plain: the same exact gradient (docs/method.md §2)
    memory_budget: float = 2.0  # GiB of step residuals the `auto` engine keeps per unroll instead of recomputing
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    eval_every: int = 50  # 0 = never evaluate during distillation
    evaluate_initial: bool = True  # also score the initial set (iteration 0): it can be the best one
    eval_runs: int = 1
    eval_epochs: int = 300
    selection: str = "validation"  # validation | test (the paper's practice; marked in the outputs)
    checkpoint_every: int = 25
    resume: bool = True
    max_consecutive_skips: int = 100  # stop (writing the outputs) when this many updates in a row are skipped

    def __post_init__(self) -> None:
        for name, minimum in (
            ("ipc", 1),
            ("iterations", 0),
            ("syn_steps", 1),
            ("trajectories_per_iteration", 1),
            ("expert_epochs", 1),
            ("min_start_epoch", 0),
            ("current_max_start_epoch", 1),
            ("max_start_epoch", 1),
            ("expansion_end_iteration", 1),
            ("eval_every", 0),
            ("eval_runs", 1),
            ("eval_epochs", 1),
            ("checkpoint_every", 1),
            ("max_consecutive_skips", 1),
        ):
            checks.integer(self, name, minimum)
        checks.integer(self, "batch_syn", 1, nullable=True)
        checks.integer(self, "label_init_experts", 1, nullable=True)
        for name in ("lr_img", "lr_lr", "lr_y", "lr_teacher", "min_syn_lr", "threshold", "memory_budget"):
            checks.positive(self, name)
        for name in ("momentum_img", "momentum_lr", "momentum_y"):
            checks.fraction(self, name)
        if self.min_start_epoch >= self.max_start_epoch:
            checks.fail(self, "min_start_epoch", f"must be < max_start_epoch = {self.max_start_epoch}")
        if self.sequential_generation and not (
            self.min_start_epoch < self.current_max_start_epoch <= self.max_start_epoch
        ):
            checks.fail(
                self,
                "current_max_start_epoch",
                f"must lie in (min_start_epoch, max_start_epoch] = ({self.min_start_epoch}, {self.max_start_epoch}]",
            )
        checks.choice(self, "pix_init", PIX_INITS)
        checks.choice(self, "engine", ENGINES)
        checks.choice(self, "selection", SELECTIONS)
        parse_strategy(self.dsa_strategy)

    @property
    def window(self) -> Window:
        return Window(
            self.min_start_epoch,
            self.current_max_start_epoch,
            self.max_start_epoch,
            self.expansion_end_iteration,
            self.sequential_generation,
        )

    @property
    def required_epochs(self) -> int:
        """Expert epochs the window needs (T+ - 1 + M)."""
        return required_epochs(self.max_start_epoch, self.expert_epochs)

    @property
    def augmentation(self) -> str:
        """The DSA strategy in effect ("" when off)."""
        return self.dsa_strategy if self.dsa else ""
