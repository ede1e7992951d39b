"""Run the torchrun (multi-process gloo) tests many times in a row and report every run.

Usage: .venv/bin/python scripts/torchrun_soak.py [--runs 20]  -> prints and writes results/torchrun_soak.md
A flaky teardown (a rank aborting while another still talks to it) shows up here as a failed run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_ranks.py",
    "tests/test_parallel_distill.py",
    "tests/test_buffers.py::test_two_gloo_processes_write_byte_identical_experts",
    "tests/test_evaluate.py::test_two_gloo_processes_give_the_same_records_as_one",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from distill.evaluate.records import git_commit
    from distill.io.atomic import atomic_write_bytes

    rows, began = [], time.perf_counter()
    for run in range(1, args.runs + 1):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--no-header", "-o", "addopts=", *TESTS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "WANDB_MODE": "disabled"},
        )
        summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        if done.returncode != 0:  # keep the evidence of a failure beside the report
            failed = ROOT / "runs" / "torchrun_soak" / f"run{run}.log"
            failed.parent.mkdir(parents=True, exist_ok=True)
            failed.write_text(done.stdout + "\n" + done.stderr)
        rows.append((run, done.returncode == 0, summary, time.perf_counter() - started))
        print(f"run {run}: {'ok' if done.returncode == 0 else 'FAILED'} - {summary}", flush=True)
    failures = sum(not ok for _, ok, _, _ in rows)
    lines = [
        "# torchrun tests, run again and again",
        "",
        f"Command: `.venv/bin/python scripts/torchrun_soak.py --runs {args.runs}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores  ",
        f"Wall time: {(time.perf_counter() - began) / 60:.1f} min",
        "",
        f"Tests: {', '.join(f'`{t}`' for t in TESTS)}",
        "",
        f"**{args.runs - failures} of {args.runs} runs passed.**",
        "",
        "| run | result | pytest summary | seconds |",
        "|---|---|---|---|",
        *[
            f"| {run} | {'pass' if ok else '**FAIL**'} | {summary} | {seconds:.0f} |"
            for run, ok, summary, seconds in rows
        ],
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / "torchrun_soak.md", text.encode())
    print(text)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
