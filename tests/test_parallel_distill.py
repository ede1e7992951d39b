"""Data-parallel distillation: K torchrun ranks split every minibatch and take the steps one process takes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.errors import DistillError
from distill.matching.spread import Spread, spread_layout
from distill.matching.unroll import Shard, make_engine
from distill.models import FlatModel, build_model
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]

# A toy run in float64 with DSA, soft labels and uneven minibatches (8 images in batches of 3, 3, 2):
# rank 0 writes the set after three iterations of each run named on the command line (engine_samples).
SCRIPT = """
import sys, torch
from distill.matching.init import synthetic_classes
from distill.matching.loop import Distiller
from distill.matching.settings import DistillSettings
from distill.matching.unroll import Shard
from distill.models import FlatModel, build_model
from distill.parallel import init_distributed, shutdown

class Experts:
    epochs = 4
    def __init__(self, start):
        g = torch.Generator().manual_seed(1)
        self.path = [[start + 0.02 * e * torch.randn(start.shape, generator=g, dtype=start.dtype) for e in range(5)]
                     for _ in range(2)]
    def __len__(self):
        return 2
    def params(self, k, epoch, device="cpu"):
        return self.path[k][epoch].to(device)

rank = init_distributed("cpu")
torch.manual_seed(0)
out = {}
for run in sys.argv[2].split(","):
    engine, samples = run.split("_")[0], int(run.split("_")[1])
    student = FlatModel(build_model("convnet", 1, 4, 8, seed=0, width=6, depth=2, dtype=torch.float64))
    settings = DistillSettings(ipc=2, syn_steps=4, expert_epochs=2, min_start_epoch=0, current_max_start_epoch=2,
                               max_start_epoch=3, expansion_end_iteration=2, lr_img=10.0, lr_lr=1e-3, lr_y=2.0,
                               threshold=1e9, batch_syn=3, engine=engine,
                               trajectories_per_iteration=samples)
    g = torch.Generator().manual_seed(2)
    images = torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64)
    logits = torch.randn(8, 4, generator=g, dtype=torch.float64)
    distiller = Distiller(settings, Experts(student.flatten()), student, images, logits, 0.05,
                          synthetic_classes(4, 2), 4, seed=3, shard=Shard(rank.rank, rank.world))
    calls, engine_fn = [], distiller.engine
    distiller.engine = lambda *args: calls.append(1) or engine_fn(*args)
    losses = [distiller.step().loss for _ in range(3)]
    out[run] = {**distiller.current_set(), "losses": torch.tensor(losses), "start": images,
                "unrolls": torch.tensor(len(calls))}
if rank.is_main:
    torch.save(out, sys.argv[1])
shutdown()
"""


def _run(tmp_path: Path, ranks: int, runs: str = "plain_1,flat_1,flat_2") -> dict:
    script, result = tmp_path / "toy.py", tmp_path / f"out{ranks}.pt"
    script.write_text(SCRIPT)
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    done = subprocess.run(
        [sys.executable, *launcher, str(script), str(result), runs],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(result, weights_only=True)


def _assert_same_runs(one: dict, many: dict) -> None:
    for run in many:
        for key in ("images", "label_logits", "lr", "losses"):
            a, b = one[run][key], many[run][key]
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (run, key, float((a - b).abs().max()))
        assert float((one[run]["images"] - one[run]["start"]).abs().max()) > 1e-3  # the updates happened
    # each rank unrolls only its group's samples: with two or more ranks, one of the two per update
    assert int(one["flat_2"]["unrolls"]) == 6 and int(many["flat_2"]["unrolls"]) == 3
    if "flat_1" in many:  # two samples per update are another run than one (else the spread proves nothing)
        assert float((one["flat_2"]["images"] - one["flat_1"]["images"]).abs().max()) > 1e-4


def test_two_gloo_ranks_take_the_steps_of_one_process_with_both_engines(tmp_path):
    """Two ranks split each minibatch (one sample per update) or take one sample each (two per update)."""
    _assert_same_runs(_run(tmp_path, 1), _run(tmp_path, 2))


@pytest.mark.slow
def test_four_gloo_ranks_split_two_samples_into_two_groups_of_two(tmp_path):
    _assert_same_runs(_run(tmp_path, 1), _run(tmp_path, 4, "flat_2"))


def test_samples_are_spread_over_gcd_groups_of_contiguous_ranks():
    assert spread_layout(0, 1, 3) == (1, 0, 0, 1)  # one process: everything
    assert [spread_layout(r, 2, 2) for r in range(2)] == [(2, 0, 0, 1), (2, 1, 0, 1)]  # one sample per rank
    assert [spread_layout(r, 4, 2) for r in range(4)] == [(2, 0, 0, 2), (2, 0, 1, 2), (2, 1, 0, 2), (2, 1, 1, 2)]
    assert [spread_layout(r, 2, 3) for r in range(2)] == [(1, 0, 0, 2), (1, 0, 1, 2)]  # coprime: split minibatches
    assert [spread_layout(r, 6, 4)[:2] for r in range(6)] == [(2, 0)] * 3 + [(2, 1)] * 3
    assert Spread(samples=5, groups=2, group=1).mine() == [1, 3]
    assert Spread(samples=3).mine() == [0, 1, 2]


def test_shards_cover_a_minibatch_and_refuse_more_ranks_than_images():
    assert [Shard(r, 3).bounds(8) for r in range(3)] == [(0, 3), (3, 6), (6, 8)]
    with pytest.raises(DistillError, match="4 ranks share minibatches of 3 images: use at most 3 ranks"):
        Shard(0, 4).bounds(3)


def test_batch_norm_models_are_refused_for_split_minibatches():
    student = FlatModel(build_model("convnet_bn", 1, 4, 8, width=4, depth=1))
    with pytest.raises(DistillError, match="has batch norm.*distil it in one process"):
        make_engine("flat", student, Shard(0, 2))
    make_engine("flat", student, Shard(0, 1))  # one process is fine


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    env = {**os.environ, "WANDB_MODE": "disabled"}
    common = ["-m", "distill.jobs.distill", *TINY, f"paths.buffers={folder}", "device=cpu"]
    whole = subprocess.run(
        [sys.executable, *common, "distill.iterations=4", f"paths.distill={tmp_path}/one"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    part = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            *common,
            "distill.iterations=2",
            f"paths.distill={tmp_path}/two",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert part.returncode == 0, part.stderr[-2000:]
    rest = subprocess.run(
        [sys.executable, *common, "distill.iterations=4", f"paths.distill={tmp_path}/two"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rest.returncode == 0 and "resumed from" in rest.stdout + rest.stderr, rest.stderr[-2000:]
    from distill.io.artifact import load_artifact

    a, _, _ = load_artifact(tmp_path / "one" / "distilled_last.safetensors")
    b, _, meta = load_artifact(tmp_path / "two" / "distilled_last.safetensors")
    for key in ("images", "label_logits", "lr"):
        scale = float(a[key].abs().max())
        assert float((a[key] - b[key]).abs().max()) <= 1e-4 * scale, key


def _worker_with_local_rank(parent: int, local_rank: int) -> int | None:
    """The pid of torchrun worker `local_rank` under torchrun process `parent` (from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[3]) == parent and f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_when_a_rank_dies_the_others_end_and_the_checkpoint_stays_intact(tiny_buffer, tmp_path):
    import signal
    import time

    from distill.io.checkpoint import CHECKPOINT_FORMAT

    _, folder = tiny_buffer
    out = tmp_path / "run"
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "distill.jobs.distill",
            *TINY,
            f"paths.buffers={folder}",
            "device=cpu",
            "distill.iterations=400",
            "distill.checkpoint_every=1",
            f"paths.distill={out}",
        ],
        env={**os.environ, "WANDB_MODE": "disabled"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").is_file():
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim = _worker_with_local_rank(job.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    job.wait(timeout=120)  # the survivors end, they do not hang
    assert job.returncode != 0
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["state"]["iteration"] >= 1
