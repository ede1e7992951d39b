"""torchrun ranks on CPU: threads per rank, coordination, teardown."""

import os
import subprocess
import sys

from distill.parallel import Rank, choose_device, gather_objects, init_distributed

SCRIPT = """
import os, torch
from distill.parallel import gather_objects, init_distributed, shutdown
rank = init_distributed("cpu")
seen = gather_objects((rank.rank, rank.local_world, torch.get_num_threads()), rank)
if rank.is_main:
    print("ranks", seen, flush=True)
shutdown()
"""


def test_each_cpu_rank_gets_its_share_of_the_cores(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    share = max(1, os.cpu_count() // 2)
    assert f"ranks [(0, 2, {share}), (1, 2, {share})]" in result.stdout


def test_without_torchrun_there_is_one_rank_and_no_process_group(monkeypatch, capsys):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    rank = init_distributed("auto")
    assert (rank.rank, rank.world, rank.is_main) == (0, 1, True) and gather_objects({"a": 1}, rank) == [{"a": 1}]
    device = choose_device("auto", Rank())
    import torch

    if not torch.cuda.is_available():
        assert device.type == "cpu"
        err = capsys.readouterr().err.strip()
        assert err.startswith("device=auto:") and "no CUDA GPU" in err and "\n" not in err
