"""Runs the fault, bad-input and fuzzing tests and writes results/reliability.md: what was tried, how many
times, what happened.

Usage: .venv/bin/python scripts/reliability_report.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from distill.evaluate.records import git_commit
from distill.io.atomic import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]

# test id prefix -> (what is injected, how many times per test case)
CATALOGUE = {
    "test_faults.py::test_buffer_job_killed": ("SIGKILL of a buffer job at a random moment, then re-run", "1 kill"),
    "test_faults.py::test_distill_job_killed": (
        "SIGKILL of a distillation job at a random moment, then resume",
        "1 kill",
    ),
    "test_faults.py::test_failed_writes": (
        "every atomic rename fails (ENOSPC = disk full, EACCES = read-only)",
        "1 run",
    ),
    "test_faults.py::test_two_runs": ("a second run on a locked output folder", "1 run"),
    "test_faults.py::test_nan_in_a_buffer": ("NaN expert parameters in a buffer", "1 run"),
    "test_matching.py::test_non_finite_images": ("NaN injected into the synthetic images", "1 step"),
    "test_matching.py::test_threshold_skips": ("loss above threshold on every step", "3 steps"),
    "test_matching.py::test_learned_lr_is_kept_positive": ("huge lr_lr pushing the learned lr negative", "5 steps"),
    "test_fuzz.py::": ("property-based fuzzing (hypothesis) of a binary loader", "150 examples"),
    "test_io.py::test_lying_headers": ("safetensors header lying about offsets, dtype, shape or size", "1 file"),
    "test_io.py::test_truncated": ("zero-length file, header length beyond the file", "2 files"),
    "test_io.py::test_atomic_write": ("disk full during an atomic write", "1 write"),
    "test_data.py::test_malicious_pickle": ("CIFAR pickle calling a global (print)", "2 files"),
    "test_data.py::test_idx_wrong_magic": ("idx file with wrong magic, truncated, huge declared dims", "3 files"),
    "test_data.py::test_cifar_python_pickles": ("CIFAR batch failing its md5", "1 file"),
    "test_data.py::test_cifar_binary": ("truncated CIFAR binary file", "1 file"),
    "test_data.py::test_missing_dataset": ("missing dataset folders", "3 datasets"),
    "test_buffers.py::test_reader_refuses": (
        "buffer too short for the window; expert file with a flipped byte",
        "2 cases",
    ),
    "test_buffers.py::test_resume_after_a_kill": ("interrupt during an expert write, partial temp file left", "1 run"),
    "test_buffers.py::test_folder_with_another": ("buffer folder of another model / ZCA setting", "2 runs"),
    "test_buffers.py::test_reference_file_asking": (
        "reference .pt asking for os.system; wrong tensor count",
        "2 files",
    ),
    "test_evaluate.py::test_bad_artifacts": (
        "artifact with lr <= 0, another dataset, truncated; bad arch; bad lr",
        "5 cases",
    ),
    "test_distill_job.py::test_bad_distill_inputs": (
        "short buffer, ZCA mismatch, IPC too large, bad window/batch/engine",
        "7 cases",
    ),
    "test_distill_job.py::test_checkpoint_of_another": ("resume with a checkpoint of another config", "1 run"),
    "test_cli.py::": ("invalid configs and the command-line error format", "1 run"),
}


def main() -> None:
    files = sorted({key.split("::")[0] for key in CATALOGUE})
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "report.xml"
        started = time.perf_counter()
        # a whole file where the catalogue names only the file, else the named tests (prefix match)
        names = [key.split("::")[1] or key.split(".py")[0] for key in CATALOGUE]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                *[f"tests/{f}" for f in files],
                "-q",
                f"--junitxml={xml}",
                "-k",
                " or ".join(names),
                "-p",
                "no:cacheprovider",
            ],
            cwd=ROOT,
            env={**os.environ, "WANDB_MODE": "disabled"},
            check=False,
        )
        seconds = time.perf_counter() - started
        cases = ET.parse(xml).getroot().iter("testcase")
        rows = []
        for case in cases:
            test_id = f"{case.get('classname').split('.')[-1]}.py::{case.get('name')}"
            match = next((v for k, v in CATALOGUE.items() if test_id.startswith(k)), None)
            if match is None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            outcome = (
                "FAILED"
                if failed
                else (
                    "skipped"
                    if case.find("skipped") is not None
                    else "one-line error or logged skip; earlier outputs intact"
                )
            )
            rows.append(f"| `{test_id}` | {match[0]} | {match[1]} | {outcome} |")
    lines = [
        "# Reliability: faults, bad input and untrusted files",
        "",
        "Command: `.venv/bin/python scripts/reliability_report.py`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; wall time {seconds:.0f} s",
        "",
        "Each row is one test case that ran; a passing case asserts that the fault ended in a one-line "
        "`DistillError` (or a counted skip) and that no earlier output was lost or taken as valid.",
        "",
        "| test | fault or input | tried | outcome |",
        "|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / "reliability.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
