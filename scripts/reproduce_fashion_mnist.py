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

import dataclasses
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from sync_readme import sync_readme  # noqa: E402

from distill.cli import load_config  # noqa: E402
from distill.evaluate.records import git_commit  # noqa: E402
from distill.io.atomic import atomic_write_bytes  # noqa: E402
from distill.jobs.buffers import run_buffers  # noqa: E402
from distill.jobs.distill import run_distill  # noqa: E402
from distill.jobs.evaluate import run_evaluate  # noqa: E402

# One row per distillation run: IPC, method, start-epoch window and iterations. The buffer has
# 7 epochs (checkpoints 0..7), M = 2, so start epochs are < 6. A window is (T-, T, T+): t is drawn
# from [T-, U) with U growing from T to T+ by iteration E (DATM's sequential generation); T = T+
# means a fixed window [T-, T+). DATM aligns the window with IPC (early for 1, later for 50); MTT
# keeps hard labels and real images, draws t from [0, T+) and never skips an update (reference §2);
# the ablation runs DATM with only an early ([0, 2)) or only a late ([4, 6)) window.
DATM_WINDOW = {1: (0, 2, 4, 200), 10: (0, 3, 5, 100), 50: (2, 6, 6, 1)}
ITERATIONS = {1: 400, 10: 200, 50: 160}
ABLATION_WINDOW = {"early-only": (0, 2, 2, 1), "late-only": (4, 6, 6, 1)}
BUDGET_SECONDS = 90 * 60


def run_overrides(ipc: int, method: str, window: tuple[int, int, int, int]) -> list[str]:
    """Hydra overrides for one distillation run of the benchmark (on top of experiment=fashion_mnist_cpu)."""
    low, first_high, high, expansion_end = window
    overrides = [
        f"distill.ipc={ipc}",
        f"distill.iterations={ITERATIONS[ipc]}",
        f"distill.method={method}",
        f"distill.min_start_epoch={low}",
        f"distill.current_max_start_epoch={first_high}",
        f"distill.max_start_epoch={high}",
        f"distill.expansion_end_iteration={expansion_end}",
        f"distill.sequential_generation={str(first_high < high).lower()}",
    ]
    if ipc == 50:
        overrides.append("distill.batch_syn=100")
    if method == "mtt":
        overrides += ["distill.soft_labels=false", "distill.pix_init=real", "distill.threshold=1e30"]
    return overrides


# name -> (IPC, method, window): the main runs, then the ablation
SPECS = {f"datm_ipc{ipc}": (ipc, "datm", w) for ipc, w in DATM_WINDOW.items()}
SPECS |= {f"mtt_ipc{ipc}": (ipc, "mtt", (0, w[2], w[2], 1)) for ipc, w in DATM_WINDOW.items()}
SPECS |= {
    f"{method.split('-')[0]}_ipc{ipc}": (ipc, method, w) for ipc in (1, 50) for method, w in ABLATION_WINDOW.items()
}
RUNS = {name: run_overrides(*spec) for name, spec in SPECS.items()}


def window_text(window: tuple[int, int, int, int]) -> str:
    low, first_high, high, expansion_end = window
    if first_high == high:
        return f"[{low}, {high})"
    return f"[{low}, {first_high} -> {high}) by iteration {expansion_end}"


def config(overrides: list[str]):
    """The benchmark's config: the preset, then `overrides`; committed results go to results/."""
    return load_config(["experiment=fashion_mnist_cpu", "paths.results=results", *overrides])


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
    buffer_cfg = config(extra)
    folder = run_buffers(buffer_cfg)
    # Experts trained by an earlier (interrupted) invocation are only verified here: count their
    # recorded training time, so the total is what the whole script costs from scratch.
    timings[f"buffers ({buffer_cfg.buffers.num_experts} experts x {buffer_cfg.buffers.epochs} epochs)"] = max(
        time.perf_counter() - t0, expert_train_seconds(folder) or 0.0
    )

    first = True
    for name, overrides in RUNS.items():
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
        evaluation = dataclasses.replace(cfg.eval, artifact=str(out / "distilled.safetensors"), baselines=baselines)
        if SPECS[name][1] in ABLATION_WINDOW:
            evaluation.label_modes = ["soft"]  # the ablation compares windows, not label modes
        t0 = time.perf_counter()
        run_evaluate(dataclasses.replace(cfg, eval=evaluation))
        timings[f"evaluate {name}" + (f" (+ {', '.join(baselines)})" if baselines else "")] = time.perf_counter() - t0
    timings["total"] = sum(timings.values())
    write_report(
        timings, [*(["--only", ",".join(sorted(only))] if only else []), *extra], time.perf_counter() - started
    )


def expert_train_seconds(folder: Path) -> float | None:
    """Sum of the experts' recorded training times (manifest), or None when one is missing or the
    manifest cannot be read (a timing report never fails on it; the buffer reader judges the files)."""
    import json

    try:
        seconds = [e.get("train_seconds") for e in json.loads((folder / "manifest.json").read_text())["experts"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return float(sum(seconds)) if seconds and all(isinstance(s, (int, float)) for s in seconds) else None


def timings_from_disk() -> dict[str, float]:
    """Stage timings reconstructed from what the runs wrote: expert sidecars (train_seconds), each
    distillation's summary.json and the evaluation records' wall_seconds (for a run cut short)."""
    import json

    from distill.evaluate.records import newest_per_cell, read_records

    timings: dict[str, float] = {}
    trained = expert_train_seconds(config([]).buffers_folder())
    if trained is not None:
        timings["buffers (sum over experts)"] = trained
    records = newest_per_cell(read_records(ROOT / "results" / "records", "fashion_mnist"))
    for name in RUNS:
        summary = ROOT / "runs" / "fashion_mnist" / name / "summary.json"
        if not summary.is_file():
            continue
        timings[f"distill {name}"] = json.loads(summary.read_text())["seconds_this_session"]
        mine = [r for r in records if (r.get("artifact") or "").startswith(f"runs/fashion_mnist/{name}/")]
        timings[f"evaluate {name}"] = sum(r["wall_seconds"] for r in mine)
    timings["baselines (random subsets, full set)"] = sum(r["wall_seconds"] for r in records if r["set"] != "distilled")
    return timings


def checks(records: list[dict]) -> list[str]:
    """Markdown rows: per IPC, DATM's best label mode against the random subset and the window ablation."""
    from distill.evaluate.records import newest_per_cell
    from distill.evaluate.tables import gap_closed

    cells = {(r["set"], r["method"], r["ipc"], r["labels"]): r["mean"] for r in newest_per_cell(records)}
    full = next((m for (kind, *_), m in cells.items() if kind == "full"), None)
    rows = []
    for ipc in sorted(DATM_WINDOW):
        datm = cells.get(("distilled", "datm", ipc, "soft"))
        random_ = cells.get(("random", "random", ipc, "hard"))
        mtt = cells.get(("distilled", "mtt", ipc, "hard"))
        if datm is None or random_ is None:
            continue
        gap = gap_closed(datm, random_, full) if full is not None else None
        ablation = " / ".join(
            f"{100 * cells[key]:.1f}" if key in cells else "–"
            for key in (("distilled", m, ipc, "soft") for m in ABLATION_WINDOW)
        )
        rows.append(
            f"| {ipc} | {100 * datm:.1f} | {100 * random_:.1f} | {100 * (datm - random_):+.1f} | "
            f"{'yes' if datm > random_ else '**no**'} | {'–' if gap is None else f'{100 * gap:.0f} %'} | "
            f"{'–' if mtt is None else f'{100 * mtt:.1f}'} | {ablation} |"
        )
    return rows


def write_report(timings: dict[str, float], args: list[str], invocation_seconds: float | None = None) -> None:
    """Write results/fashion_mnist_benchmark.md (runs, checks, stage timings) and sync the README.
    `invocation_seconds`: this process's wall time, when the timings come from a run and not from disk."""
    from distill.evaluate.records import read_records

    records = read_records(ROOT / "results" / "records", "fashion_mnist")
    lines = [
        "# Fashion-MNIST CPU benchmark",
        "",
        f"Command: `.venv/bin/python scripts/reproduce_fashion_mnist.py {' '.join(args)}`".rstrip() + "  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{platform.platform()}, Python {platform.python_version()}  ",
        "The full accuracy table is `results/fashion_mnist.md`; the settings are "
        "`configs/experiment/fashion_mnist_cpu.yaml` plus the runs below.",
        "",
        "## Runs (start epoch t drawn from the window; buffer epochs 0..7, M = 2)",
        "",
        "| run | IPC | labels | window of t | iterations |",
        "|---|---|---|---|---|",
    ]
    for name, (ipc, method, window) in SPECS.items():
        labels = "hard (MTT)" if method == "mtt" else "soft (learned)"
        lines.append(f"| {name} | {ipc} | {labels} | {window_text(window)} | {ITERATIONS[ipc]} |")
    lines += [
        "",
        "## DATM against the random subset, MTT and the window ablation (test accuracy %)",
        "",
        "| IPC | DATM (soft labels) | random subset | difference | distilled > random | gap closed | "
        "MTT (hard labels) | early-only / late-only window |",
        "|---|---|---|---|---|---|---|---|",
        *checks(records),
        "",
        "## Stage timings",
        "",
        "| stage | wall time (s) |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    if "total" in timings:
        verdict = "within" if timings["total"] <= BUDGET_SECONDS else "**over**"
        lines += ["", f"Total {timings['total'] / 60:.1f} min: {verdict} the {BUDGET_SECONDS // 60}-minute budget."]
    if invocation_seconds is not None:
        lines += [
            f"This invocation's wall time: {invocation_seconds / 60:.1f} min (less than the total when it "
            "resumed earlier work, e.g. experts trained before)."
        ]
    atomic_write_bytes(ROOT / "results" / "fashion_mnist_benchmark.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    sync_readme(ROOT)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report-only"]:
        write_report(timings_from_disk(), sys.argv[1:])
    elif sys.argv[1:2] == ["--only"]:  # e.g. --only early_ipc1,late_ipc1: a subset of the runs
        main(sys.argv[3:], set(sys.argv[2].split(",")))
    else:
        main(sys.argv[1:])
