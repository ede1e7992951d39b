"""Kill jobs at random points (SIGKILL) and resume; simulated disk-full / read-only writes; two runs on one folder."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distill.buffers.store import expert_path
from distill.errors import DistillError
from distill.io.artifact import load_artifact
from distill.jobs.distill import run_distill
from tests.conftest import TINY, make_config

ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "2"}


def _start(module, *overrides):
    return subprocess.Popen([sys.executable, "-m", module, *TINY, *overrides], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_after(proc, seconds):
    time.sleep(seconds)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def _valid_or_absent(folder):
    """Every expert file a later step could read is complete (its sidecar's sha256 matches)."""
    from distill.buffers.store import completed_expert

    for side in folder.glob("expert_*.json"):
        record = json.loads(side.read_text())
        assert completed_expert(folder, record["index"], record["seed"], record["epochs"]) is not None


@pytest.mark.parametrize("delay", [3.5, 5.0])
def test_buffer_job_killed_then_resumed_equals_uninterrupted(tiny_buffer, tmp_path, delay):
    _, reference = tiny_buffer
    out = tmp_path / "b"
    _kill_after(_start("distill.jobs.buffers", f"paths.buffers={out}"), delay + random.random())
    if out.exists():
        _valid_or_absent(out)
    done = subprocess.run([sys.executable, "-m", "distill.jobs.buffers", *TINY, f"paths.buffers={out}"], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    for k in range(2):
        assert expert_path(out, k).read_bytes() == expert_path(reference, k).read_bytes()
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("delay", [4.0, 6.0])
def test_distill_job_killed_then_resumed_equals_uninterrupted(tiny_buffer, tmp_path, delay):
    _, folder = tiny_buffer
    common = [f"paths.buffers={folder}", "distill.iterations=6", "distill.checkpoint_every=1"]
    whole = run_distill(make_config(tmp_path / "whole", *common))
    out = tmp_path / "killed"
    _kill_after(_start("distill.jobs.distill", *common, f"paths.distill={out}"), delay + random.random())
    done = subprocess.run([sys.executable, "-m", "distill.jobs.distill", *TINY, *common, f"paths.distill={out}"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    a, _, _ = load_artifact(whole / "distilled_last.safetensors")
    b, _, _ = load_artifact(out / "distilled_last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_failed_writes_keep_the_last_good_checkpoint(tiny_buffer, tmp_path, monkeypatch, code):
    _, folder = tiny_buffer
    cfg = make_config(tmp_path, f"paths.buffers={folder}", "distill.iterations=2")
    out = run_distill(cfg)
    good = (out / "checkpoint.pt").read_bytes()
    artifact = (out / "distilled.safetensors").read_bytes()
    import distill.io.atomic as atomic

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    longer = make_config(tmp_path, f"paths.buffers={folder}", "distill.iterations=4")
    with pytest.raises(DistillError, match="left intact") as info:
        run_distill(longer)
    assert "\n" not in str(info.value)
    assert (out / "checkpoint.pt").read_bytes() == good
    assert (out / "distilled.safetensors").read_bytes() == artifact
    assert not list(out.glob(".*.tmp"))


def test_two_runs_cannot_share_an_output_folder(tiny_buffer, tmp_path):
    from distill.io.lock import folder_lock

    _, folder = tiny_buffer
    with folder_lock(tmp_path / "distill"):
        with pytest.raises(DistillError, match="another run .* is writing"):
            run_distill(make_config(tmp_path, f"paths.buffers={folder}"))
    run_distill(make_config(tmp_path, f"paths.buffers={folder}"))  # the lock is released


def test_nan_in_a_buffer_is_skipped_and_reported(tiny_buffer, tmp_path):
    from safetensors.torch import load_file

    from distill.buffers.store import write_expert, write_manifest, ModelSignature

    _, folder = tiny_buffer
    manifest = json.loads((folder / "manifest.json").read_text())
    signature = ModelSignature.from_json(manifest["model"])
    bad = tmp_path / "nanbuf"
    sidecars = []
    for k in range(2):
        params = load_file(expert_path(folder, k))
        params = {n: params[n] for n in signature.param_names}
        params[signature.param_names[0]][:] = float("nan")
        sidecars.append(write_expert(bad, k, params, signature, manifest["dataset_fingerprint"], k, [], []))
    write_manifest(bad, manifest["config"], manifest["dataset_fingerprint"], signature, sidecars)
    cfg = make_config(tmp_path, f"paths.buffers={bad}", "distill.pix_init=real", "distill.soft_labels=false",
                      "distill.max_consecutive_skips=2")
    with pytest.raises(DistillError, match="skipped \\(last: expert parameters not finite\\); the best and last sets"):
        run_distill(cfg)
    # the run still ends with its outputs, and the summary says why it stopped
    out = Path(cfg.paths.distill)
    assert (out / "distilled.safetensors").is_file() and (out / "distilled_last.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["skipped_updates"] == 2
    assert summary["stopped_early"] == "2 updates in a row were skipped (last: expert parameters not finite)"
