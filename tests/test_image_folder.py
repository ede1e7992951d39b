"""A user's own images in class folders (`dataset=image_folder`)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import distill
from distill.buffers.store import BUFFER_FORMAT, describe_mismatch
from distill.data.registry import load_dataset
from distill.errors import DistillError

CLASSES = ("zebra", "ant", "moose")  # created in this order; numbered in sorted order


def pictures(count: int, seed: int, size=(6, 5)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=size, dtype=np.uint8) for _ in range(count)]


def write_folder(root: Path, train: int = 4, test: int = 2, size=(6, 5)) -> dict:
    """root/{train,test}/<class>/<i>.png of random grey pictures; returns split -> class -> the arrays."""
    made = {}
    for split, count, seed in (("train", train, 0), ("test", test, 1)):
        made[split] = {}
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            made[split][name] = pictures(count, seed * 10 + k, size)
            for i, array in enumerate(made[split][name]):
                Image.fromarray(array).save(folder / f"{i}.png")
    return made


def test_images_load_exactly_with_classes_in_sorted_folder_order(tmp_path):
    made = write_folder(tmp_path)
    data = load_dataset("image_folder", tmp_path)
    assert data.class_names == ("ant", "moose", "zebra")
    assert data.train_images.shape == (12, 1, 6, 5) and data.test_images.shape == (6, 1, 6, 5)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for k, name in enumerate(data.class_names):
        expected = torch.from_numpy(np.stack(made["train"][name]))
        assert torch.equal(data.train_images[data.train_labels == k][:, 0], expected)
        expected = torch.from_numpy(np.stack(made["test"][name]))
        assert torch.equal(data.test_images[data.test_labels == k][:, 0], expected)
    # the second load comes from the cache and is the same
    assert (tmp_path / ".cache" / "image_folder.safetensors").is_file()
    again = load_dataset("image_folder", tmp_path)
    assert torch.equal(again.train_images, data.train_images) and again.notes == data.notes


def test_one_colour_image_makes_every_image_rgb(tmp_path):
    write_folder(tmp_path)
    colour = np.random.default_rng(5).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "test" / "ant" / "colour.png")
    data = load_dataset("image_folder", tmp_path)
    assert data.train_images.shape[1] == 3 and data.test_images.shape == (7, 3, 6, 5)
    grey = data.train_images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert any(torch.equal(image, torch.from_numpy(colour).permute(2, 0, 1)) for image in data.test_images)


def test_an_edited_image_is_read_again_and_changes_the_identity(tmp_path):
    write_folder(tmp_path)
    before = load_dataset("image_folder", tmp_path)
    path = tmp_path / "train" / "ant" / "0.png"
    array = np.asarray(Image.open(path)).copy()
    array[0, 0] ^= 1  # one pixel, same size of image, probably the same second
    Image.fromarray(array).save(path)
    after = load_dataset("image_folder", tmp_path)
    assert after.train_images[0, 0, 0, 0] == int(array[0, 0])
    assert after.notes["content"] != before.notes["content"]
    # a buffer made from the images before the edit is refused by what it says it was made from
    prepared = distill.prepare_data(distill.DatasetSpec("image_folder", root=str(tmp_path), val_per_class=1))
    assert prepared.fingerprint["content"] == after.notes["content"]
    manifest = {"format": BUFFER_FORMAT, "dataset_fingerprint": {**prepared.fingerprint, "content": "other"}}
    assert describe_mismatch(manifest, prepared.fingerprint, None).startswith("dataset content: buffer has 'other'")


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda root: os.rename(root / "test", root / "val"), r"expected .*/train/<class>/<image> and .*/test/"),
        (lambda root: os.rename(root / "test" / "ant", root / "test" / "bee"), "different classes"),
        (lambda root: [f.unlink() for f in (root / "train" / "moose").iterdir()], "train/moose holds no images"),
        (
            lambda root: Image.fromarray(np.zeros((7, 5), np.uint8)).save(root / "test" / "zebra" / "big.png"),
            "big.png is 5x7, .* is 5x6: every image must have one size",
        ),
        (
            lambda root: (root / "train" / "ant" / "bad.png").write_bytes(b"not a png"),
            "bad.png is not a readable image",
        ),
        (
            lambda root: Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(root / "train" / "ant" / "deep.png"),
            "deep.png has I;16 pixels, not 8 bits per channel: convert the images to 8-bit first",
        ),
    ],
)
def test_a_wrong_folder_ends_in_one_line_naming_the_fix(tmp_path, damage, message):
    write_folder(tmp_path)
    damage(tmp_path)
    with pytest.raises(DistillError, match=message) as refused:
        load_dataset("image_folder", tmp_path)
    assert "\n" not in str(refused.value)


def test_two_folders_get_their_own_buffers_and_runs(tmp_path):
    a, b, again = (distill.load_config(["dataset=image_folder", f"dataset.root={tmp_path / n}"]) for n in "aba")
    assert a.buffers_folder() != b.buffers_folder() and a.distill_folder() != b.distill_folder()
    assert a.buffers_folder() == again.buffers_folder()
    # a built-in dataset's folders do not depend on where its files are
    c, d = (distill.load_config(["dataset=digits", f"dataset.root={tmp_path / n}"]) for n in "ab")
    assert c.buffers_folder() == d.buffers_folder()


def test_own_images_go_through_experts_and_distillation(tmp_path):
    write_folder(tmp_path, train=8, test=3, size=(8, 8))
    data = distill.prepare_data(distill.DatasetSpec("image_folder", root=str(tmp_path), val_per_class=2))
    model = distill.ModelSpec("convnet", {"width": 8, "depth": 2})
    experts = distill.train_experts(data, model, distill.ExpertRecipe(epochs=3, batch_size=8), num_experts=2)
    settings = distill.DistillSettings(
        ipc=1, iterations=2, syn_steps=3, current_max_start_epoch=1, max_start_epoch=1, eval_every=0, engine="flat"
    )
    result = distill.distill_set(data, experts, model, settings, log=lambda line: None)
    images = result.selected["images"]
    assert (
        images.shape == (3, 1, 8, 8)
        and torch.isfinite(images).all()
        and result.selected["label_logits"].shape == (3, 3)
    )
