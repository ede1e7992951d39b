"""GPU recipe: buffers, DATM distillation with the paper's preset, and evaluation for one dataset,
printing the accuracies of the DATM paper's Table 1 beside the measured ones.

Usage (on a GPU machine; add torchrun for several GPUs, see README):
    .venv/bin/python scripts/reproduce_paper.py cifar10 --ipc 1 10 50 [--experts 100] [hydra overrides...]
    .venv/bin/python scripts/reproduce_paper.py cifar100 --ipc 10
    .venv/bin/python scripts/reproduce_paper.py tiny --ipc 1
    .venv/bin/python scripts/reproduce_paper.py cifar10 --ipc 10 --selection test   # the paper's own protocol
Fewer experts (--experts 10) or iterations (distill.iterations=2000) give a cheaper, weaker run;
whatever is measured goes to results/<dataset>.md and results/<dataset>_paper_comparison.md. The
comparison is rebuilt from every evaluation record of the dataset, so runs of single IPCs add up.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from distill.cli import load_config
from distill.evaluate.records import read_records
from distill.io.atomic import atomic_write_bytes
from distill.reports.paper import DATASET_NAME, PAPER, comparison_report
from distill.stages.buffers import run_buffers
from distill.stages.distill import run_distill
from distill.stages.evaluate import run_evaluate

ROOT = Path(__file__).resolve().parents[1]


def official_protocol() -> list[str]:
    """Overrides that reproduce the official protocol: no validation hold-out (experts, ZCA and
    initialisation see the whole training set) and the set picked by test accuracy. Buffers and runs
    go to folders of their own: the default folders are named after the settings that shape them."""
    return ["dataset.val_per_class=0", "distill.selection=test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(PAPER))
    parser.add_argument("--ipc", type=int, nargs="+", required=True)
    parser.add_argument("--experts", type=int, default=None, help="number of experts (paper: 100)")
    parser.add_argument(
        "--selection",
        choices=("validation", "test"),
        default="validation",
        help="validation (default): pick the set on a split carved from train; test: the official "
        "protocol (experts, ZCA and init on the whole training set, the set picked on test)",
    )
    # Hydra overrides (key=value) may come anywhere, also right after --ipc's values.
    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in sys.argv[1:] if a not in overrides])
    for ipc in args.ipc:
        if ipc not in PAPER[args.dataset]["datm"]:
            raise SystemExit(
                f"no paper preset for {args.dataset} IPC {ipc}: choose from {sorted(PAPER[args.dataset]['datm'])}"
            )
    os.chdir(ROOT)
    os.environ.setdefault("WANDB_MODE", "offline")
    extra = official_protocol() if args.selection == "test" else []
    extra += list(overrides) + ([f"buffers.num_experts={args.experts}"] if args.experts else [])
    command = f".venv/bin/python scripts/reproduce_paper.py {' '.join(sys.argv[1:])}"
    records_dir = ROOT / "results" / "records"
    timings: dict[str, float] = {}
    for i, ipc in enumerate(args.ipc):
        cfg = load_config([f"experiment=datm_{args.dataset}_ipc{ipc}", "paths.results=results", *extra])
        t0 = time.perf_counter()
        run_buffers(cfg)
        timings[f"buffers (IPC {ipc} preset)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run_distill(cfg)
        timings[f"distill IPC {ipc}"] = time.perf_counter() - t0
        evaluation = dataclasses.replace(
            cfg.eval, artifact=str(out / "distilled.safetensors"), baselines=["random"] + (["full"] if i == 0 else [])
        )
        t0 = time.perf_counter()
        run_evaluate(dataclasses.replace(cfg, eval=evaluation))
        timings[f"evaluate IPC {ipc}"] = time.perf_counter() - t0
        text = comparison_report(args.dataset, read_records(records_dir, DATASET_NAME[args.dataset]), timings, command)
        atomic_write_bytes(ROOT / "results" / f"{args.dataset}_paper_comparison.md", text.encode())
        print(text, flush=True)


if __name__ == "__main__":
    main()
