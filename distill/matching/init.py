"""Initial synthetic images and soft labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from distill.data.splits import class_balanced_subset
from distill.errors import DistillError

Classifier = Callable[[torch.Tensor], torch.Tensor]  # images [B, C, H, W] -> logits [B, K]


def synthetic_classes(num_classes: int, ipc: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Class of every synthetic image, class-major: [0]*ipc + [1]*ipc + ... ; shape [num_classes * ipc]."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def init_real(images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int, seed: int) -> torch.Tensor:
    """`ipc` random real images per class, class-major [num_classes * ipc, C, H, W] (MTT's default)."""
    return images[class_balanced_subset(labels.cpu(), ipc, num_classes, seed).to(images.device)].clone()


def init_noise(shape: tuple[int, ...], seed: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal images of `shape` [N, C, H, W]."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


@torch.no_grad()
def _predict(classifier: Classifier, images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    return torch.cat([classifier(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def init_correct(
    images: torch.Tensor, labels: torch.Tensor, ipc: int, num_classes: int, experts: Sequence[Classifier], seed: int
) -> torch.Tensor:
    """`ipc` real images per class that a trained expert classifies correctly (DATM's default).

    For each class the images are shuffled and scanned with expert 0; the first `ipc` predicted
    correctly are kept. If a class runs short, the next expert rescans it, keeping those chosen.
    Easy, correctly classified samples give the soft-label initialiser meaningful logits.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen_all = []
    for cls in range(num_classes):
        members = torch.nonzero(labels.cpu() == cls).flatten()
        if len(members) < ipc:
            raise DistillError(
                f"class {cls} has {len(members)} training images, fewer than ipc={ipc}: use a smaller IPC"
            )
        members = members[torch.randperm(len(members), generator=generator)]
        chosen: list[int] = []
        for expert in experts:
            predicted = _predict(expert, images[members.to(images.device)]).argmax(1).cpu()
            for index, pred in zip(members.tolist(), predicted.tolist()):
                if pred == cls and index not in chosen:
                    chosen.append(index)
                    if len(chosen) == ipc:
                        break
            if len(chosen) == ipc:
                break
        if len(chosen) < ipc:
            raise DistillError(
                f"class {cls}: only {len(chosen)} images are classified correctly by the "
                f"{len(experts)} experts, ipc={ipc} needed: use distill.pix_init=real"
            )
        chosen_all.extend(chosen)
    return images[torch.tensor(chosen_all, device=images.device)].clone()


def init_label_logits(
    images: torch.Tensor, classes: torch.Tensor, experts: Sequence[Classifier]
) -> tuple[torch.Tensor, float]:
    """Initial learnable logits [N, K]: per image, the mean logits of the experts that classify it correctly.

    Raw logits are averaged (no softmax or temperature), as in DATM. An image no expert classifies
    correctly (possible with real or noise init) gets the mean over all experts instead.
    Returns (logits, fraction of images whose averaged logits' argmax is their class).
    """
    all_logits = torch.stack([_predict(expert, images) for expert in experts])  # [E, N, K]
    correct = (all_logits.argmax(2) == classes.view(1, -1)).to(all_logits.dtype)  # [E, N]
    counts = correct.sum(0)  # [N]
    summed = (all_logits * correct.unsqueeze(2)).sum(0)
    logits = torch.where(counts.view(-1, 1) > 0, summed / counts.clamp_min(1).view(-1, 1), all_logits.mean(0))
    accuracy = float((logits.argmax(1) == classes).float().mean())
    return logits, accuracy


def init_label_logits_one_expert(
    images: torch.Tensor, classes: torch.Tensor, expert: Classifier
) -> tuple[torch.Tensor, float]:
    """Initial learnable logits [N, K] for `pix_init=real`: one expert's raw logits, unfiltered, as DATM does
    there (real images need not be classified correctly, so there is no correct-only average to take).

    Returns (logits, fraction of images whose logits' argmax is their class).
    """
    logits = _predict(expert, images)
    return logits, float((logits.argmax(1) == classes).float().mean())
