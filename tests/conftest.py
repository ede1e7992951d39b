"""Shared fixtures: the real Hydra config composed and shrunk to tiny CPU sizes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distill.cli import compose_config

os.environ.setdefault("WANDB_MODE", "disabled")
# under pytest-xdist the workers share the cores: more threads in all than cores runs many times slower
torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """Every test starts from the same global RNG state, whichever xdist worker runs it and after which tests:
    a test that draws an unseeded init must pass or fail the same way each run."""
    torch.manual_seed(0)


TINY = [
    "progress=false",
    "model.options.width=8",
    "buffers.num_experts=2",
    "buffers.epochs=4",
    "buffers.batch_size=32",
    "distill.ipc=2",
    "distill.iterations=3",
    "distill.syn_steps=3",
    "distill.expert_epochs=2",
    "distill.min_start_epoch=0",
    "distill.current_max_start_epoch=1",
    "distill.max_start_epoch=3",
    "distill.expansion_end_iteration=2",
    "distill.eval_every=0",
    "distill.engine=flat",  # compiling costs ~30 s a graph here; the compiled engine has its own tests
    "distill.checkpoint_every=2",
    "eval.runs=2",
    "eval.full_epochs=1",
    "protocol.epochs=10",
]


def make_config(tmp_path: Path, *overrides: str):
    """The project's config with TINY sizes, outputs under tmp_path, then `overrides` applied."""
    paths = [
        f"paths.buffers={tmp_path}/buffers",
        f"paths.distill={tmp_path}/distill",
        f"paths.results={tmp_path}/results",
    ]
    return compose_config([*TINY, *paths, *overrides])


@pytest.fixture
def tiny_cfg(tmp_path):
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def tiny_buffer(tmp_path_factory):
    """A 2-expert, 4-epoch buffer on digits (built once per test session). Returns (cfg, folder)."""
    from distill.stages.buffers import run_buffers

    root = tmp_path_factory.mktemp("shared")
    cfg = make_config(root)
    return cfg, run_buffers(cfg)
