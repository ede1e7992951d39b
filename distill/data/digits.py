"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.data.splits import fixed_test_split

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@register_dataset("digits")
def load_digits_dataset(root: Path | None = None, download: bool = False) -> ImageData:
    """1,797 real 8x8 grey images, 10 classes, split once into a fixed train/test partition.

    The split is stratified and seeded (20 % test, seed 0): 1,437 train and 360 test images.
    Pixel values 0..16 are rescaled to uint8 0..255. `root` and `download` are ignored.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = fixed_test_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    train_images = torch.from_numpy(images[idx_train])
    mean, std = channel_stats(train_images)
    return ImageData(
        name="digits",
        train_images=train_images,
        train_labels=torch.from_numpy(labels[idx_train]),
        test_images=torch.from_numpy(images[idx_test]),
        test_labels=torch.from_numpy(labels[idx_test]),
        class_names=tuple(str(i) for i in range(10)),
        mean=mean,
        std=std,
        notes={"split": f"stratified {1 - DIGITS_TEST_FRACTION:.0%}/{DIGITS_TEST_FRACTION:.0%}, seed {DIGITS_SPLIT_SEED}"},
    )
