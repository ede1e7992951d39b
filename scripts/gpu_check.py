"""The GPU path end to end, sized for a few minutes on one GPU, written to results/gpu.md.

Usage (on a GPU machine; the data is read from a local folder, no network needed):
    .venv/bin/python scripts/gpu_check.py [--data /usr/share/datasets/fashion-mnist] [--reference-dir PATH]
    .venv/bin/python scripts/gpu_check.py --dry-run      # the same stages, tiny, on the CPU (tests use this)

Stages: experts (ConvNet-128, Fashion-MNIST), DATM at IPC 10 with N = 80 student steps (`compiled`
engine), evaluation beside a random subset, and the engine benchmark against the official code when
`--reference-dir` names a checkout of it. Each stage's wall time, the GPU, torch / CUDA versions and
the numerics flags in effect (TF32, cuDNN benchmark / determinism: GPU runs are not bit-reproducible)
go into the report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FULL = [
    "dataset=fashion_mnist",
    "model=convnet",
    "buffers.num_experts=2",
    "buffers.epochs=6",
    "distill.ipc=10",
    "distill.syn_steps=80",
    "distill.iterations=100",
    "distill.expert_epochs=2",
    "distill.min_start_epoch=0",
    "distill.current_max_start_epoch=2",
    "distill.max_start_epoch=4",
    "distill.expansion_end_iteration=50",
    "distill.batch_syn=100",
    "distill.eval_every=50",
    "distill.eval_epochs=300",
    "protocol.epochs=300",
    "eval.runs=3",
    "eval.baselines=[random]",
    "eval.label_modes=[soft]",
    "device=auto",
]
DRY = [
    "dataset=digits",
    "model=convnet_w32_d2",
    "model.options.width=8",
    "buffers.num_experts=2",
    "buffers.epochs=4",
    "buffers.batch_size=64",
    "distill.ipc=2",
    "distill.syn_steps=3",
    "distill.iterations=2",
    "distill.expert_epochs=2",
    "distill.min_start_epoch=0",
    "distill.current_max_start_epoch=1",
    "distill.max_start_epoch=3",
    "distill.expansion_end_iteration=2",
    "distill.eval_every=0",
    "distill.engine=flat",
    "protocol.epochs=2",
    "eval.runs=1",
    "eval.baselines=[random]",
    "eval.label_modes=[soft]",
    "device=cpu",
]


def numerics() -> dict:
    """The flags that decide GPU numerics (what makes runs differ in the last bits)."""
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(0),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            cudnn_deterministic=torch.backends.cudnn.deterministic,
        )
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="local Fashion-MNIST folder")
    parser.add_argument("--reference-dir", type=Path, default=None, help="official DATM checkout for the benchmark")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--out", type=Path, default=None, help="report path (default results/gpu.md; dry run: runs/)")
    args = parser.parse_args(argv)

    from distill.cli import load_config
    from distill.stages.buffers import run_buffers
    from distill.stages.distill import run_distill
    from distill.stages.evaluate import run_evaluate

    work = ROOT / "runs" / ("gpu_check_dry" if args.dry_run else "gpu_check")
    out = args.out or (work / "gpu.md" if args.dry_run else ROOT / "results" / "gpu.md")
    overrides = (DRY if args.dry_run else [*FULL, f"dataset.root={args.data}"]) + [
        f"paths.buffers={work}/buffers",
        f"paths.distill={work}/distill",
        f"paths.results={work}/results",
        "progress=false",
    ]
    cfg = load_config(overrides)
    if not args.dry_run and cfg.device == "auto":
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU visible: run with --dry-run on a CPU", file=sys.stderr)
            return 2
    timings, began = {}, time.perf_counter()
    summary, records, bench = None, None, None

    def write() -> None:
        """The report with the stages done so far (rewritten after each: a run cut short keeps them)."""
        lines = [
            "# GPU check",
            "",
            f"Command: `.venv/bin/python scripts/gpu_check.py {' '.join(argv or sys.argv[1:])}`  ",
            f"Numerics: `{json.dumps(numerics())}`  ",
            f"Total wall time: {time.perf_counter() - began:.0f} s",
            "",
            "| stage | wall time (s) |",
            "|---|---|",
            *[f"| {k} | {v:.0f} |" for k, v in timings.items()],
        ]
        if summary is not None:
            per_iteration = summary["seconds_this_session"] / max(summary["iterations"], 1)
            lines += [
                "",
                f"Distillation: {summary['iterations']} iterations, {summary['skipped_updates']} skipped, "
                f"{per_iteration:.2f} s/iteration, {summary['selection']}.",
            ]
        if records is not None:
            lines += ["", "| set | labels | test accuracy (%) |", "|---|---|---|"]
            lines += [
                f"| {r['set']} | {r['labels']} | {100 * r['mean']:.1f} ± {100 * r['std']:.1f} (n={r['runs']}) |"
                for r in records
            ]
        if bench:
            lines += ["", bench]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")

    t0 = time.perf_counter()
    run_buffers(cfg)
    timings["experts"] = time.perf_counter() - t0
    write()
    t0 = time.perf_counter()
    folder = run_distill(cfg)
    timings["distill"] = time.perf_counter() - t0
    summary = json.loads((folder / "summary.json").read_text())
    write()
    import dataclasses

    t0 = time.perf_counter()
    records = run_evaluate(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, artifact=str(folder))))
    timings["evaluate"] = time.perf_counter() - t0
    write()
    if args.reference_dir is not None:
        t0 = time.perf_counter()
        report = work / "speed_vs_reference.md"
        cases = "tiny" if args.dry_run else "quick"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_vs_reference.py"),
                "--reference-dir",
                str(args.reference_dir),
                "--cases",
                cases,
                "--device",
                "cpu" if args.dry_run else "cuda",
                "--engines",
                # the exact default, the inexact bf16 variant beside it (tensor cores), and the eager walk
                "flat,flat+bf16" if args.dry_run else "compiled,compiled+bf16,flat",
                "--out",
                str(report),
            ],
            check=True,
        )
        bench = report.read_text()
        timings["engine benchmark"] = time.perf_counter() - t0
    write()
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
