"""CPU reference benchmark on Fashion-MNIST: buffers, DATM and MTT at IPC 1/10/50, the
difficulty-alignment ablation, random subsets and the full set, all under one evaluation protocol.

Usage:  .venv/bin/python scripts/reproduce_fashion_mnist.py [hydra overrides...]
        .venv/bin/python scripts/reproduce_fashion_mnist.py --only datm_ipc1,mtt_ipc1 [overrides...]
        .venv/bin/python scripts/reproduce_fashion_mnist.py --report-only   (timings from the files on disk)
Needs Fashion-MNIST: Debian's `dataset-fashion-mnist` (installed here when apt-get is available) or
`dataset.download=true`. Every stage is resumable: re-running skips finished experts and resumes
distillation from checkpoints. Writes results/fashion_mnist.md (the table),
results/fashion_mnist_benchmark.md (stage timings, command, commit, machine) and image grids.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.evaluate.records import git_commit  # noqa: E402
from distill.io.atomic import atomic_write_bytes  # noqa: E402
from distill.jobs.buffers import run_buffers  # noqa: E402
from distill.jobs.common import CONFIG_DIR  # noqa: E402
from distill.jobs.distill import run_distill  # noqa: E402
from distill.jobs.evaluate import run_evaluate  # noqa: E402

# DATM's difficulty alignment on an 8-epoch buffer: small IPC matches early epochs with a growing
# window, large IPC a later window. MTT: hard labels, real init, window [0, T+) without growth.
RUNS = {
    "datm_ipc1": ["distill.ipc=1", "distill.iterations=300", "distill.min_start_epoch=0",
                  "distill.current_max_start_epoch=2", "distill.max_start_epoch=4", "distill.expansion_end_iteration=200"],
    "datm_ipc10": ["distill.ipc=10", "distill.iterations=120", "distill.min_start_epoch=0",
                   "distill.current_max_start_epoch=3", "distill.max_start_epoch=5", "distill.expansion_end_iteration=100"],
    "datm_ipc50": ["distill.ipc=50", "distill.iterations=80", "distill.batch_syn=100", "distill.min_start_epoch=2",
                   "distill.current_max_start_epoch=5", "distill.max_start_epoch=6", "distill.sequential_generation=false",
                   "distill.expansion_end_iteration=1"],
}
for ipc, iters, extra in ((1, 300, []), (10, 120, []), (50, 80, ["distill.batch_syn=100"])):
    RUNS[f"mtt_ipc{ipc}"] = [f"distill.ipc={ipc}", f"distill.iterations={iters}", "distill.method=mtt",
                             "distill.soft_labels=false", "distill.pix_init=real", "distill.min_start_epoch=0",
                             "distill.current_max_start_epoch=6", "distill.max_start_epoch=6",
                             "distill.sequential_generation=false", *extra]
ABLATION = {
    "early_ipc1": RUNS["datm_ipc1"] + ["distill.method=early-only", "distill.min_start_epoch=0",
                                       "distill.max_start_epoch=2", "distill.current_max_start_epoch=2",
                                       "distill.sequential_generation=false"],
    "late_ipc1": RUNS["datm_ipc1"] + ["distill.method=late-only", "distill.min_start_epoch=4",
                                      "distill.max_start_epoch=6", "distill.current_max_start_epoch=6",
                                      "distill.sequential_generation=false"],
    "early_ipc50": RUNS["datm_ipc50"] + ["distill.method=early-only", "distill.min_start_epoch=0",
                                         "distill.max_start_epoch=2", "distill.current_max_start_epoch=2"],
    "late_ipc50": RUNS["datm_ipc50"] + ["distill.method=late-only", "distill.min_start_epoch=4",
                                        "distill.max_start_epoch=6", "distill.current_max_start_epoch=6"],
}


def config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=fashion_mnist_cpu", *overrides])


def ensure_dataset() -> None:
    if Path("/usr/share/datasets/fashion-mnist").is_dir() or shutil.which("apt-get") is None:
        return
    subprocess.run("apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist", shell=True, check=False)


def main(extra: list[str], only: set[str] | None = None) -> None:
    os.chdir(ROOT)
    os.environ.setdefault("WANDB_MODE", "offline")
    ensure_dataset()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    t0 = time.perf_counter()
    run_buffers(config(extra))
    timings["buffers (4 experts x 7 epochs)"] = time.perf_counter() - t0

    first = True
    for name, overrides in {**RUNS, **ABLATION}.items():
        if only is not None and name not in only:
            continue
        cfg = config([*overrides, *extra, f"paths.distill=runs/fashion_mnist/{name}"])
        t0 = time.perf_counter()
        out = run_distill(cfg)
        timings[f"distill {name}"] = time.perf_counter() - t0
        atomic_write_bytes(Path(cfg.paths.results) / f"fashion_mnist_{name}_grid.png", (out / "grid.png").read_bytes())
        baselines = []
        if name.startswith("datm"):
            baselines = ["random"] + (["full"] if first else [])
            first = False
        with open_dict(cfg):
            cfg.eval.artifact = str(out / "distilled.safetensors")
            cfg.eval.baselines = baselines
            if name in ABLATION:
                cfg.eval.label_modes = ["soft"]  # the ablation compares windows, not label modes
        t0 = time.perf_counter()
        run_evaluate(cfg)
        timings[f"evaluate {name}" + (f" (+ {', '.join(baselines)})" if baselines else "")] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    write_report(timings, extra)


def timings_from_disk() -> dict[str, float]:
    """Stage timings reconstructed from what the runs wrote: expert sidecars (train_seconds), each
    distillation's summary.json and the evaluation records' wall_seconds (for a run cut short)."""
    import json

    from distill.evaluate.records import read_records

    timings: dict[str, float] = {}
    manifest = ROOT / "buffers" / "fashion_mnist" / "convnet" / "zca_False" / "manifest.json"
    if manifest.is_file():
        seconds = [e.get("train_seconds") for e in json.loads(manifest.read_text())["experts"]]
        if all(s is not None for s in seconds):
            timings["buffers (sum over experts)"] = sum(seconds)
    records = read_records(ROOT / "results" / "records", "fashion_mnist")
    for name in {**RUNS, **ABLATION}:
        summary = ROOT / "runs" / "fashion_mnist" / name / "summary.json"
        if not summary.is_file():
            continue
        timings[f"distill {name}"] = json.loads(summary.read_text())["seconds_this_session"]
        mine = [r for r in records if (r.get("artifact") or "").startswith(f"runs/fashion_mnist/{name}/")]
        timings[f"evaluate {name}"] = sum(r["wall_seconds"] for r in mine)
    timings["baselines (random subsets, full set)"] = sum(r["wall_seconds"] for r in records if r["set"] != "distilled")
    return timings


def write_report(timings: dict[str, float], extra: list[str]) -> None:
    lines = ["# Fashion-MNIST CPU benchmark: stage timings", "",
             f"Command: `.venv/bin/python scripts/reproduce_fashion_mnist.py {' '.join(extra)}`".rstrip() + "  ",
             f"Commit: {git_commit()}  ", f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
             f"{platform.platform()}, Python {platform.python_version()}  ",
             "The accuracy table is `results/fashion_mnist.md`.", "",
             "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    atomic_write_bytes(ROOT / "results" / "fashion_mnist_benchmark.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report-only"]:
        write_report(timings_from_disk(), sys.argv[2:])
    elif sys.argv[1:2] == ["--only"]:  # e.g. --only early_ipc1,late_ipc1: a subset of the runs
        main(sys.argv[3:], set(sys.argv[2].split(",")))
    else:
        main(sys.argv[1:])
