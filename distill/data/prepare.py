"""A dataset ready for training: loaded, split (train / validation / test), mapped into model-input space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from distill import checks
from distill.data.cache import cached
from distill.data.preprocess import REFERENCE_STATISTICS, Preprocessor, fit_preprocessor
from distill.data.registry import ImageData, load_dataset
from distill.data.splits import stratified_holdout
from distill.io.tensors import sha256_tensor


@dataclass
class DatasetSpec:
    """Which dataset, where it lives, and how pixels become model inputs (the config's `dataset` section).

    normalisation (without ZCA): "measured" mean / std of the train split, or "reference" = the
    official code's fixed constants (`REFERENCE_STATISTICS`). val_per_class images of every class are
    held out of the training split (seeded by val_seed) for selection; 0 keeps the whole training set.
    """

    name: str = "digits"
    root: Optional[str] = None  # None = data/<name>
    download: bool = False
    zca: bool = False
    zca_eps: float = 0.1
    normalisation: str = "measured"
    val_per_class: int = 10
    val_seed: int = 0

    def __post_init__(self) -> None:
        checks.positive(self, "zca_eps")
        checks.integer(self, "val_per_class", 0)
        checks.integer(self, "val_seed", 0)
        checks.choice(self, "normalisation", ("measured", "reference"))
        if self.normalisation == "reference" and self.name not in REFERENCE_STATISTICS:
            checks.fail(self, "normalisation", f"=reference has constants only for {', '.join(REFERENCE_STATISTICS)}")
        if self.normalisation == "reference" and self.zca:
            checks.fail(self, "normalisation", "=reference applies without ZCA only (zca=false)")


@dataclass
class PreparedData:
    """A dataset split three ways and mapped into model-input space (float tensors on one device).

    train/val/test images: [N, C, H, W]; labels: int64 [N]. `fingerprint` identifies the dataset,
    split and preprocessing; buffers and artifacts carry it and are checked against it.
    """

    raw: ImageData
    preprocessor: Preprocessor
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    fingerprint: dict

    @property
    def num_classes(self) -> int:
        return self.raw.num_classes

    @property
    def channels(self) -> int:
        return self.raw.channels

    @property
    def resolution(self) -> tuple[int, int]:
        return self.raw.resolution


def prepare_data(spec: DatasetSpec | str = "digits", device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, preprocessor: Preprocessor | None = None) -> PreparedData:
    """Load `spec` (a DatasetSpec or a dataset name), carve the validation split, fit normalisation / ZCA
    on the remaining train split (or apply `preprocessor`, e.g. the one stored in a distilled artifact)."""
    spec = DatasetSpec(spec) if isinstance(spec, str) else spec
    raw = load_dataset(spec.name, spec.root, download=spec.download)
    keep, held = stratified_holdout(raw.train_labels, spec.val_per_class, spec.val_seed)
    train_u8 = raw.train_images[keep]
    fixed = REFERENCE_STATISTICS[spec.name] if spec.normalisation == "reference" else None
    if preprocessor is not None:
        pre = preprocessor
    elif spec.zca:
        pre = _cached_zca(spec, train_u8)
    else:
        pre = fit_preprocessor(train_u8, zca=False, fixed_statistics=fixed)

    def to(x: torch.Tensor) -> torch.Tensor:
        return pre.apply(x).to(device=device, dtype=dtype)

    fingerprint = {
        "dataset": spec.name,
        "train_images": int(len(keep)),
        "val_per_class": spec.val_per_class,
        "val_seed": spec.val_seed,
        "resolution": list(raw.resolution),
        "channels": raw.channels,
        "num_classes": raw.num_classes,
        "preprocess": pre.fingerprint(),
    }
    if "content" in raw.notes:  # a dataset whose name does not fix its images (image_folder)
        fingerprint["content"] = raw.notes["content"]
    return PreparedData(raw, pre, to(train_u8), raw.train_labels[keep].to(device),
                        to(raw.train_images[held]), raw.train_labels[held].to(device),
                        to(raw.test_images), raw.test_labels.to(device), fingerprint)


def _cached_zca(spec: DatasetSpec, train_u8: torch.Tensor) -> Preprocessor:
    """ZCA fitted on `train_u8`, kept in <dataset root>/.cache so that later jobs (and torchrun ranks)
    load it instead of refitting (Tiny ImageNet's fit is minutes and tens of GB)."""
    key = f"{sha256_tensor(train_u8)[:16]}-eps{spec.zca_eps}"
    folder = Path(spec.root) if spec.root is not None else Path("data") / spec.name
    state = cached(folder / ".cache" / f"zca_{key}.safetensors", key,
                   lambda: fit_preprocessor(train_u8, zca=True, zca_eps=spec.zca_eps).state())
    return Preprocessor.from_state("zca", state, spec.zca_eps)
