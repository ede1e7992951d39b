"""The evaluation protocol as data, and its learning-rate schedule."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from distill import checks
from distill.data.augment import DEFAULT_STRATEGY, parse_strategy


@dataclass
class Protocol:
    """How a fresh network is trained on a set (the config's `protocol` section; docs/method.md §5).

    lr None means "the artifact's learned lr"; baselines (which have none) use baseline_lr.
    labels: "soft" (softmax of stored logits) or "hard" (their argmax). dsa=False trains without
    augmentation.
    """

    name: str = "reference"
    epochs: int = 1000
    lr: float | None = None
    baseline_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = DEFAULT_STRATEGY
    labels: str = "soft"

    def __post_init__(self) -> None:
        checks.integer(self, "epochs", 1)
        checks.integer(self, "batch_size", 1)
        checks.positive(self, "lr", nullable=True)
        checks.positive(self, "baseline_lr")
        checks.fraction(self, "momentum")
        checks.choice(self, "labels", ("soft", "hard"))
        parse_strategy(self.dsa_strategy)

    @property
    def augmentation(self) -> str:
        """The DSA strategy in effect ("" when off)."""
        return self.dsa_strategy if self.dsa else ""

    def to_json(self) -> dict:
        return asdict(self)


def decay_epoch(epochs: int) -> int:
    """The last epoch index trained at the full lr: the reference decays after epoch epochs // 2 + 1."""
    return epochs // 2 + 1


def lr_at_epoch(epoch: int, base_lr: float, epochs: int) -> float:
    """Learning rate of epoch index `epoch` (0..epochs; the reference runs epochs + 1 passes)."""
    return base_lr if epoch <= decay_epoch(epochs) else base_lr * 0.1
