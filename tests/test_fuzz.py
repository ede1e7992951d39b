"""Property-based fuzzing of every binary loader: arbitrary or mutated bytes end in a DistillError or a
valid result; never another exception, never code execution, never an unbounded allocation."""

import io
import json
import pickle
import struct

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.buffers.legacy import load_reference_file
from distill.data.cifar import read_cifar_binary, safe_unpickle
from distill.data.idx import parse_idx
from distill.errors import DistillError
from distill.io.artifact import load_artifact
from distill.io.checkpoint import load_checkpoint, save_checkpoint
from distill.io.tensors import load_tensors, save_tensors

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ok_or_distill_error(fn, *args):
    try:
        fn(*args)
    except DistillError as exc:
        assert "\n" not in str(exc)


@FAST
@given(st.binary(max_size=300), st.integers(1, 4))
def test_idx_parser_never_crashes(data, dims):
    _ok_or_distill_error(parse_idx, data, dims, "fuzz")


@FAST
@given(st.lists(st.integers(0, 2**31), min_size=1, max_size=4), st.binary(max_size=64))
def test_idx_parser_refuses_lying_dimensions(dims, payload):
    data = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
    _ok_or_distill_error(parse_idx, data, len(dims), "fuzz")


@FAST
@given(st.binary(max_size=400))
def test_restricted_unpickler_never_runs_code(data):
    _ok_or_distill_error(safe_unpickle, data, "fuzz")


_VALID = io.BytesIO()


def _valid_safetensors(tmp_path):
    return save_tensors(
        tmp_path / "v.safetensors",
        {"a": torch.arange(12.0).view(3, 4), "b": torch.ones(2, dtype=torch.int64)},
        {"format": "x"},
    ).read_bytes()


@FAST
@given(data=st.data())
def test_mutated_safetensors_are_refused_cleanly(tmp_path, data):
    raw = bytearray(_valid_safetensors(tmp_path))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    path = tmp_path / "m.safetensors"
    path.write_bytes(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    _ok_or_distill_error(load_tensors, path)
    _ok_or_distill_error(load_artifact, path)


@FAST
@given(
    st.dictionaries(
        st.text(max_size=5),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "U8", "F64", "I64", "X"]),
                "shape": st.lists(st.integers(-2, 10**13), max_size=4),
                "data_offsets": st.lists(st.integers(-5, 10**12), min_size=2, max_size=2),
            }
        ),
        max_size=3,
    )
)
def test_lying_safetensors_headers_are_refused(tmp_path, header):
    raw = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x00" * 64)
    _ok_or_distill_error(load_tensors, path)


@FAST
@given(st.binary(max_size=600))
def test_checkpoints_and_reference_buffers_never_run_code(tmp_path, data):
    path = tmp_path / "c.pt"
    path.write_bytes(data)
    _ok_or_distill_error(load_checkpoint, path, "key")
    (tmp_path / "replay_buffer_0.pt").write_bytes(data)
    _ok_or_distill_error(load_reference_file, tmp_path / "replay_buffer_0.pt")


@FAST
@given(data=st.data())
def test_mutated_checkpoints_are_refused_cleanly(tmp_path, data):
    path = save_checkpoint(tmp_path / "ok.pt", {"x": torch.ones(3), "n": 1}, "key")
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))
    _ok_or_distill_error(load_checkpoint, path, "key")


@FAST
@given(st.binary(max_size=8000))
def test_cifar_binary_reader(tmp_path, data):
    path = tmp_path / "b.bin"
    path.write_bytes(data)
    _ok_or_distill_error(read_cifar_binary, path, 1)


class _Evil:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (exec, (f"open({self.sentinel!r}, 'w').write('x')",))


def test_crafted_code_pickles_in_every_loader(tmp_path):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps({"state": _Evil(sentinel)})
    for loader, name, args in ((load_checkpoint, "c.pt", ("key",)), (load_reference_file, "replay_buffer_0.pt", ())):
        path = tmp_path / name
        torch.save({"format": "distill.checkpoint/1", "config_key": "key", "state": _Evil(sentinel)}, path)
        _ok_or_distill_error(loader, path, *args)
    _ok_or_distill_error(safe_unpickle, payload, "crafted")
    assert not sentinel.exists()
