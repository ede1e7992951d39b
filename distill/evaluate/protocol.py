"""The evaluation protocol as data, and its learning-rate schedule."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    """How a fresh network is trained on a set (reference §4).

    lr None means "the artifact's learned lr"; baselines (which have none) use baseline_lr.
    labels: "soft" (softmax of stored logits) or "hard" (their argmax).
    """

    name: str = "reference"
    epochs: int = 1000
    lr: float | None = None
    baseline_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    labels: str = "soft"

    def to_json(self) -> dict:
        return asdict(self)


def decay_epoch(epochs: int) -> int:
    """The last epoch index trained at the full lr: the reference decays after epoch epochs // 2 + 1."""
    return epochs // 2 + 1


def lr_at_epoch(epoch: int, base_lr: float, epochs: int) -> float:
    """Learning rate of epoch index `epoch` (0..epochs; the reference runs epochs + 1 passes)."""
    return base_lr if epoch <= decay_epoch(epochs) else base_lr * 0.1
