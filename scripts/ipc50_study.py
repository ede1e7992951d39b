"""Levers on the CPU benchmark's IPC 50 gap, measured on DATM's IPC 50 run: DATM's own student steps (N = 80
instead of 20, as its CIFAR-10 IPC 50 config; 4x the time, which the 150-minute budget cannot hold), its
IPC 50 config's lr_img (10x its IPC 10 one, where the benchmark gives IPC 50 IPC 10's), and the full length of
the reference evaluation protocol (1000 epochs instead of the benchmark's 500).

Usage:  .venv/bin/python scripts/ipc50_study.py [--dataset fashion_mnist] [overrides...]

Each run is the benchmark's DATM IPC 50 run (scripts/reproduce_fashion_mnist.py: its experts, window rule,
checks and selection on the validation split), as the benchmark makes it, with 10x lr_img and with N = 80, run
through the benchmark's budget-study machinery (folders under runs/<dataset>_benchmark/budget/, reused when
finished). Its inputs and lr_img are the benchmark's choice (DATM at IPC 10, which IPC 50 takes): read from
runs/<dataset>_benchmark/choices.json when the benchmark ran under the current CHOICES_RULE, else
FALLBACK_CHOICES, the rule-12 choice on that dataset (results/<dataset>_benchmark.md), so that the study
needs no lr pilots. Every kept set, and the random subset beside it, is evaluated twice on the test
split, with the benchmark's protocol (500 epochs) and with the reference protocol's 1000 epochs; the checks
that selected the set trained 500 epochs either way. Writes results/<dataset>_ipc50_study.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

from distill.errors import DistillError
from distill.evaluate.records import git_commit
from distill.io.atomic import atomic_write_bytes, atomic_write_json
from distill.stages.evaluate import run_evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce_fashion_mnist as rfm  # noqa: E402  (the benchmark's Benchmark, rules and machinery)

ROOT = Path(__file__).resolve().parents[1]
# dataset -> DATM's IPC 10 choice under CHOICES_RULE 12 (results/<dataset>_benchmark.md), which IPC 50 takes
FALLBACK_CHOICES = {
    "fashion_mnist": {"lr_img": 10.0, "inputs": "ZCA"},
    "mnist_5k": {"lr_img": 10.0, "inputs": "standardised"},
}
# name -> changes to the benchmark run: none; 10x lr_img, as DATM's CIFAR-10 IPC 50 config takes 10x its IPC 10
# one (1000 against 100); DATM's own N
VARIANTS = {
    "datm_ipc50": {},
    "datm_ipc50_lr100": {"lr_img": 100.0},
    "datm_ipc50_n80": {"syn_steps": 80},
    # added after the three above ran: N = 80 with another seed (initial images, expert order, start epochs, DSA
    # draws, evaluation seeds and random subset), from the same seed-0 experts
    "datm_ipc50_n80_seed1": {"syn_steps": 80, "seed": 1},
}
LONG_PROTOCOL_EPOCHS = 1000
LONG_FILE = "protocol_1000.json"  # a set's evaluation (and its random subset's) at LONG_PROTOCOL_EPOCHS


def ipc50_spec(bench) -> tuple[tuple, str]:
    """The benchmark's DATM IPC 50 spec (IPC, method, window, lr_img, inputs) and where its lr_img and
    inputs came from: the benchmark's stored choices, else FALLBACK_CHOICES. The window is the rule's, from
    the validation curve of the experts on those inputs (trained when missing)."""
    choices = rfm.stored_choices(bench.work)
    if choices is not None:
        return rfm.run_specs(choices)["datm_ipc50"], f"{bench.work / 'choices.json'} (CHOICES_RULE {rfm.CHOICES_RULE})"
    if bench.dataset not in FALLBACK_CHOICES:
        raise DistillError(
            f"no benchmark choices for {bench.dataset}: run scripts/reproduce_fashion_mnist.py --dataset "
            f"{bench.dataset} first (or add its choice to FALLBACK_CHOICES)"
        )
    lr, inputs = FALLBACK_CHOICES[bench.dataset]["lr_img"], FALLBACK_CHOICES[bench.dataset]["inputs"]
    if inputs == "ZCA":
        window = bench.own_experts({"zca": True})["windows"]["datm_ipc50"]
    else:
        folder, _ = bench.experts(inputs)
        cfg = bench.config([])
        plateau = rfm.plateau_epoch(rfm.validation_curve(cfg, folder))
        window = rfm.windows(plateau, cfg.buffers.epochs, cfg.distill.expert_epochs)["datm_ipc50"]
    source = f"FALLBACK_CHOICES (CHOICES_RULE 12 on {bench.dataset}; no choices.json)"
    return (50, "datm", tuple(window), lr, inputs), source


def evaluate_long(bench, out: Path) -> dict:
    """The set in run folder `out` and its random subset, evaluated with LONG_PROTOCOL_EPOCHS on the test
    split (records under `out`/results_1000; reused when `out`/LONG_FILE exists). Returns
    {"test": [mean, std, runs], "random_test": [...], "seconds": s}."""
    path = out / LONG_FILE
    if path.is_file():
        return json.loads(path.read_text())
    recorded = json.loads((out / rfm.TIMING_FILE).read_text())
    cfg = bench.config(
        [
            *recorded["overrides"],
            f"protocol.epochs={LONG_PROTOCOL_EPOCHS}",
            f"paths.distill={out}",
            f"paths.results={out / 'results_1000'}",
        ]
    )
    modes = ["soft"] if cfg.distill.soft_labels else ["hard"]
    evaluation = dataclasses.replace(cfg.eval, artifact=str(out), baselines=["random"], label_modes=modes)
    started = time.perf_counter()
    written = run_evaluate(dataclasses.replace(cfg, eval=evaluation))
    result = {"seconds": round(time.perf_counter() - started, 1)}
    for record in written:
        key = "test" if record["set"] == "distilled" else f"{record['set']}_test"
        result[key] = [record["mean"], record["std"], record["runs"]]
        if record["set"] == "distilled":
            result["lr"] = record.get("lr")
    atomic_write_json(path, result)
    return result


def experts_seconds(rows: dict) -> float:
    """The training time of the experts the rows share (0 where the benchmark's own experts were read)."""
    return max((row.get("experts_seconds", 0.0) for row, _ in rows.values()), default=0.0)


def stage_minutes(rows: dict) -> float:
    """Minutes of measured stage time behind the rows: the shared experts once, then each run's
    distillation, its evaluation at 500 epochs and its evaluation at LONG_PROTOCOL_EPOCHS."""
    runs = sum(row["distill"] + row["evaluate"] + long["seconds"] for row, long in rows.values())
    return (experts_seconds(rows) + runs) / 60


def write_report(dataset: str, rows: dict, source: str, spec: tuple, argv: list[str], seconds: float) -> Path:
    """results/<dataset>_ipc50_study.md from the rows (name -> the variant's row and its long evaluation)."""
    ipc, _, window, lr, inputs = spec
    command = " ".join([".venv/bin/python scripts/ipc50_study.py", *argv])
    lines = [
        f"# {dataset}: levers at IPC 50 beyond the benchmark's settings",
        "",
        f"Command: `{command}`  ",
        f"Commit: {git_commit(ROOT)}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU  ",
        f"Measured stage time: {stage_minutes(rows):.1f} min (the experts {experts_seconds(rows):.0f} s, counted once; "
        "every distillation and evaluation); this invocation's wall time: "
        f"{seconds / 60:.1f} min (finished stages are reused, not timed again)",
        "",
        f"DATM at IPC {ipc} as the benchmark runs it (window [{window[0]}, {window[2]}), lr_img {lr:g}, {inputs} "
        f"inputs, 200 iterations, minibatches of 100, checks of three 500-epoch trainings on the validation "
        f"split, best check kept), the lr_img and inputs from {source}. `N` is the student steps per "
        "iteration. Test accuracy of the kept set (soft labels, its learned lr) and of a random real subset of "
        "the same size on the same inputs, three trainings each, with the benchmark's protocol (500 epochs) and "
        f"the reference protocol's {LONG_PROTOCOL_EPOCHS} epochs (lr x0.1 at the midpoint either way).",
        "",
        "| run | N | distillation s | best validation (iteration) | skipped updates | learned lr "
        f"| test, 500 epochs | test, {LONG_PROTOCOL_EPOCHS} epochs | random subset, 500 / {LONG_PROTOCOL_EPOCHS} "
        f"epochs | evaluation s, 500 / {LONG_PROTOCOL_EPOCHS} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (row, long) in rows.items():
        best = row["best"] or {}
        lines.append(
            f"| {name} | {row['syn_steps']} | {row['distill']:.0f} | {best.get('score', float('nan')):.3f} "
            f"({best.get('iteration', '?')}) | {row['skipped']} | {long.get('lr') or float('nan'):.4f} "
            f"| {rfm.test_cell_text(row.get('test'))} | {rfm.test_cell_text(long.get('test'))} "
            f"| {rfm.test_cell_text(row.get('random_test'))} / {rfm.test_cell_text(long.get('random_test'))} "
            f"| {row['evaluate']:.0f} / {long['seconds']:.0f} |"
        )
    out = ROOT / "results" / f"{dataset}_ipc50_study.md"
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    return out


def main(argv: list[str]) -> None:
    dataset = "fashion_mnist"
    if argv[:1] == ["--dataset"] and len(argv) > 1:
        dataset, extra = argv[1], argv[2:]
    else:
        extra = argv
    if any(arg.startswith("-") for arg in extra):
        raise DistillError(f"unknown flag {next(a for a in extra if a.startswith('-'))}: the only flag is --dataset")
    os.chdir(ROOT)
    os.environ.setdefault("WANDB_MODE", "offline")
    rfm.ensure_dataset(dataset)
    bench = rfm.Benchmark(dataset, extra, rfm.training_split_size(dataset, extra))
    started = time.perf_counter()
    spec, source = ipc50_spec(bench)
    rows = {}
    for name, changes in VARIANTS.items():
        row = bench.variant(name, spec, changes)
        rows[name] = (row, evaluate_long(bench, bench.work / "budget" / name))
        report = write_report(dataset, rows, source, spec, argv, time.perf_counter() - started)
    print(report.read_text())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
