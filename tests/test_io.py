import errno
import json
import struct

import pytest
import torch

from distill.errors import DistillError
from distill.io.atomic import atomic_write_bytes
from distill.io.tensors import load_tensors, read_header, save_tensors


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")
    import distill.io.atomic as atomic

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(DistillError, match="disk full.*left intact"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_safetensors_round_trip_with_metadata(tmp_path):
    path = save_tensors(tmp_path / "t.safetensors", {"x": torch.arange(6.0).view(2, 3)}, {"a": {"b": 1}, "c": "d"})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["x"], torch.arange(6.0).view(2, 3))
    assert meta == {"a": {"b": 1}, "c": "d"}


def _lying_file(path, header: dict, payload: bytes = b"\x00" * 8):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


@pytest.mark.parametrize(
    "header",
    [
        {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}},  # past the end
        {"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},  # shape/bytes mismatch
        {"x": {"dtype": "F128", "shape": [1], "data_offsets": [0, 8]}},  # unknown dtype
        {"x": {"dtype": "U8", "shape": [10**12, 10**12], "data_offsets": [0, 8]}},  # huge dimensions
        {"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
    ],
)
def test_lying_headers_are_refused(tmp_path, header):
    with pytest.raises(DistillError, match="invalid entry"):
        load_tensors(_lying_file(tmp_path / "bad.safetensors", header))


def test_truncated_and_empty_files_are_refused(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(DistillError, match="truncated"):
        read_header(tmp_path / "empty")
    (tmp_path / "huge").write_bytes(struct.pack("<Q", 10**15) + b"{}")
    with pytest.raises(DistillError, match="corrupt header"):
        read_header(tmp_path / "huge")


@pytest.mark.parametrize(("ipc", "height", "width"), [(1, 30, 300), (3, 300, 90)])
def test_grid_lays_classes_out_as_rows_or_one_row_for_one_image_each(tmp_path, ipc, height, width):
    from matplotlib.image import imread

    from distill.io.pictures import save_grid

    pixels = torch.zeros(10 * ipc, 1, 28, 28)
    pixels[ipc : 2 * ipc] = 1.0  # class 1 is white
    image = imread(save_grid(tmp_path / "grid.png", pixels, num_classes=10))
    scale = 512 // max(height, width)
    assert image.shape[:2] == (height * scale, width * scale)
    inside = (slice(scale, 29 * scale), slice(scale, 29 * scale))
    cell_1 = (
        image[inside[0], 30 * scale + inside[1].start : 30 * scale + inside[1].stop]
        if ipc == 1
        else image[30 * scale + inside[0].start : 30 * scale + inside[0].stop, inside[1]]
    )
    assert cell_1[..., 0].min() == 1.0 and image[inside][..., 0].max() == 0.0


def test_an_unwritable_output_folder_is_one_line(tmp_path, monkeypatch):
    import errno as codes
    import pathlib

    from distill.errors import DistillError
    from distill.io.lock import folder_lock

    def refuse(self, *args, **kwargs):  # what mkdir does in a read-only place (root ignores chmod, so simulate)
        raise PermissionError(codes.EACCES, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    with pytest.raises(
        DistillError, match=r"cannot write into .*out \(Permission denied\): choose a writable output folder"
    ):
        with folder_lock(tmp_path / "out"):
            pass
