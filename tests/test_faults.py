"""Kill jobs at random points (SIGKILL) and resume; simulated disk-full / read-only writes; two runs on one folder."""

import errno
import json
import os
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
from distill.stages.distill import run_distill
from tests.conftest import TINY, make_config

# the jobs run with the threads of this process: float sums, and so the files, depend on the thread count
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(torch.get_num_threads())}


def _start(module, *overrides):
    return subprocess.Popen(
        [sys.executable, "-m", module, *TINY, *overrides], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _kill_when(proc, happened, timeout=120.0):
    """SIGKILL `proc` as soon as `happened()` is true (the event the test needs has landed), while it still runs."""
    deadline = time.monotonic() + timeout
    while not happened():
        assert proc.poll() is None, f"the job ended before the kill: {proc.stderr.read().decode()[-1500:]}"
        assert time.monotonic() < deadline, "the awaited event never happened"
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _valid_or_absent(folder):
    """Every expert file a later step could read is complete (its sidecar's sha256 matches)."""
    from distill.buffers.store import completed_expert

    for side in folder.glob("expert_*.json"):
        record = json.loads(side.read_text())
        assert completed_expert(folder, record["index"], record["seed"], record["epochs"]) is not None


def test_buffer_job_killed_after_its_first_expert_resumes_to_identical_files(tiny_buffer, tmp_path):
    _, reference = tiny_buffer
    out = tmp_path / "b"
    # 3 experts: killed once expert 0 is on disk, i.e. while a later one trains
    job = _start("distill.jobs.buffers", f"paths.buffers={out}", "buffers.num_experts=3")
    _kill_when(job, lambda: (out / "expert_0000.json").is_file())
    assert not (out / "manifest.json").exists()
    _valid_or_absent(out)
    done = subprocess.run(
        [sys.executable, "-m", "distill.jobs.buffers", *TINY, f"paths.buffers={out}", "buffers.num_experts=3"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert "expert 0: complete and verified, skipped" in done.stdout
    for k in range(2):
        assert expert_path(out, k).read_bytes() == expert_path(reference, k).read_bytes()
    assert not list(out.glob(".*.tmp"))


def test_distill_job_killed_mid_run_resumes_to_an_identical_set(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    common = [f"paths.buffers={folder}", "distill.iterations=12", "distill.checkpoint_every=3"]
    whole = run_distill(make_config(tmp_path / "whole", *common))
    out = tmp_path / "killed"
    first = {}

    def second_checkpoint() -> bool:
        # killed after the checkpoint it resumes from changed once (iteration 3 -> 6), before the run ends
        ckpt = out / "checkpoint.pt"
        if not ckpt.is_file():
            return False
        stamp = ckpt.stat().st_mtime_ns
        first.setdefault("stamp", stamp)
        return stamp != first["stamp"]

    _kill_when(_start("distill.jobs.distill", *common, f"paths.distill={out}"), second_checkpoint)
    assert not (out / "distilled.safetensors").exists()
    done = subprocess.run(
        [sys.executable, "-m", "distill.jobs.distill", *TINY, *common, f"paths.distill={out}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert "resumed from" in done.stdout + done.stderr
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

    from distill.buffers.store import ModelSignature, write_expert, write_manifest

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
    cfg = make_config(
        tmp_path,
        f"paths.buffers={bad}",
        "distill.pix_init=real",
        "distill.soft_labels=false",
        "distill.max_consecutive_skips=2",
    )
    with pytest.raises(DistillError, match="skipped \\(last: expert parameters not finite\\); the best and last sets"):
        run_distill(cfg)
    # the run still ends with its outputs, and the summary says why it stopped
    out = Path(cfg.paths.distill)
    assert (out / "distilled.safetensors").is_file() and (out / "distilled_last.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["skipped_updates"] == 2
    assert summary["stopped_early"] == "2 updates in a row were skipped (last: expert parameters not finite)"
