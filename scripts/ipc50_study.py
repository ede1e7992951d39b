"""Levers on the CPU benchmark's IPC 50 gap, measured on its DATM and MTT IPC 50 runs: DATM's own student
steps (N = 80 instead of 20, as its CIFAR-10 IPC 50 config; 4x the time, which the 150-minute budget cannot
hold), its IPC 50 config's lr_img (10x its IPC 10 one, where the benchmark gives IPC 50 IPC 10's), and the full
length of the reference evaluation protocol (1000 epochs instead of the benchmark's 500).

Usage:  .venv/bin/python scripts/ipc50_study.py [--dataset fashion_mnist] [--only NAMES] [overrides...]

Each run is one of the benchmark's IPC 50 runs (scripts/reproduce_fashion_mnist.py: its experts, window rule,
checks and selection on the validation split), as the benchmark makes it or with the changes VARIANTS names,
run through the benchmark's budget-study machinery (folders under runs/<dataset>_benchmark/budget/, reused
when finished). A method's inputs and lr_img are the benchmark's choice (the method's at IPC 10, which IPC 50
takes): read from runs/<dataset>_benchmark/choices.json when the benchmark ran under the current CHOICES_RULE,
else FALLBACK_CHOICES, the rule-12 choice on that dataset (results/<dataset>_benchmark.md), so that the study
needs no lr pilots. Every kept set, and the random subset beside it, is evaluated on the test split twice,
with the benchmark's protocol (500 epochs) and with the reference protocol's 1000 epochs; the checks that
selected the set trained 500 epochs either way. `--only` runs the named variants (comma-separated), in
VARIANTS' order. Writes results/<dataset>_ipc50_study.md.
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
# dataset -> method -> its IPC 10 choice under CHOICES_RULE 12 (results/<dataset>_benchmark.md), which IPC 50 takes
FALLBACK_CHOICES = {
    "fashion_mnist": {"datm": {"lr_img": 10.0, "inputs": "ZCA"}, "mtt": {"lr_img": 100.0, "inputs": "standardised"}},
    "mnist_5k": {"datm": {"lr_img": 10.0, "inputs": "standardised"}, "mtt": {"lr_img": 10.0, "inputs": "standardised"}},
}
# name -> (the method whose benchmark IPC 50 run it varies, the changes): none; 10x lr_img, as DATM's CIFAR-10
# IPC 50 config takes 10x its IPC 10 one (1000 against 100); DATM's own N
VARIANTS = {
    "datm_ipc50": ("datm", {}),
    "datm_ipc50_lr100": ("datm", {"lr_img": 100.0}),
    "datm_ipc50_n80": ("datm", {"syn_steps": 80}),
    # added after the three above ran on Fashion-MNIST: N = 80 with another seed (initial images, expert order,
    # start epochs, DSA draws, evaluation seeds and random subset), from the same seed-0 experts
    "datm_ipc50_n80_seed1": ("datm", {"syn_steps": 80, "seed": 1}),
    # added after the four above ran on Fashion-MNIST: adopting N = 80 at IPC 50 would give MTT's run the same N,
    # as the benchmark does at IPC 10, so what it does to MTT decides whether DATM > MTT still holds
    "mtt_ipc50": ("mtt", {}),
    "mtt_ipc50_n80": ("mtt", {"syn_steps": 80}),
}
LONG_PROTOCOL_EPOCHS = 1000
LONG_FILE = "protocol_1000.json"  # a set's evaluation (and its random subset's) at LONG_PROTOCOL_EPOCHS
RANDOM_FILE = "random_subset.json"  # the random subset at the benchmark's protocol, where the run did not evaluate it


def ipc50_spec(bench, method: str = "datm") -> tuple[tuple, str]:
    """The benchmark's IPC 50 spec (IPC, method, window, lr_img, inputs) of `method` ("datm" or "mtt") and where
    its lr_img and inputs came from: the benchmark's stored choices, else FALLBACK_CHOICES. The window is the
    rule's, from the validation curve of the experts on those inputs (trained when missing)."""
    name = f"{method}_ipc50"
    choices = rfm.stored_choices(bench.work)
    if choices is not None:
        return rfm.run_specs(choices)[name], f"{bench.work / 'choices.json'} (CHOICES_RULE {rfm.CHOICES_RULE})"
    if bench.dataset not in FALLBACK_CHOICES:
        raise DistillError(
            f"no benchmark choices for {bench.dataset}: run scripts/reproduce_fashion_mnist.py --dataset "
            f"{bench.dataset} first (or add its choice to FALLBACK_CHOICES)"
        )
    choice = FALLBACK_CHOICES[bench.dataset][method]
    if choice["inputs"] == "ZCA":
        window = bench.own_experts({"zca": True})["windows"][name]
    else:
        folder, _ = bench.experts(choice["inputs"])
        cfg = bench.config([])
        plateau = rfm.plateau_epoch(rfm.validation_curve(cfg, folder))
        window = rfm.windows(plateau, cfg.buffers.epochs, cfg.distill.expert_epochs)[name]
    source = f"FALLBACK_CHOICES (CHOICES_RULE 12 on {bench.dataset}; no choices.json)"
    return (50, method, tuple(window), choice["lr_img"], choice["inputs"]), source


def evaluate_at(bench, out: Path, epochs: int, file: str, distilled: bool = True) -> dict:
    """The set in run folder `out` (when `distilled`) and its random subset, evaluated on the test split with
    `epochs` of training, records under `out`/results_<epochs>; reused when `out`/`file` exists. Returns
    {"test": [mean, std, runs], "random_test": [...], "lr": the set's lr, "seconds": s} ("test" and "lr"
    only when `distilled`)."""
    path = out / file
    if path.is_file():
        return json.loads(path.read_text())
    recorded = json.loads((out / rfm.TIMING_FILE).read_text())
    cfg = bench.config(
        [
            *recorded["overrides"],
            f"protocol.epochs={epochs}",
            f"paths.distill={out}",
            f"paths.results={out / f'results_{epochs}'}",
        ]
    )
    modes = ["soft"] if cfg.distill.soft_labels else ["hard"]
    artifact = str(out) if distilled else None  # None: the random subset of the run's IPC alone
    evaluation = dataclasses.replace(cfg.eval, artifact=artifact, baselines=["random"], label_modes=modes)
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


def evaluate_long(bench, out: Path) -> dict:
    """`evaluate_at` with LONG_PROTOCOL_EPOCHS: the set in `out` and its random subset (LONG_FILE)."""
    return evaluate_at(bench, out, LONG_PROTOCOL_EPOCHS, LONG_FILE)


def with_random_subset(bench, out: Path, row: dict) -> dict:
    """`row` with the random subset at the benchmark's protocol: its own when the run evaluated it (a run on
    whitened inputs does), else evaluated beside it (RANDOM_FILE, reused), whose seconds join the row's."""
    if row.get("random_test") is not None:
        return row
    random = evaluate_at(bench, out, bench.config([]).protocol.epochs, RANDOM_FILE, distilled=False)
    return {**row, "random_test": random["random_test"], "evaluate": row["evaluate"] + random["seconds"]}


def experts_seconds(rows: dict) -> float:
    """The training time of the experts the rows share (0 where the benchmark's own experts were read)."""
    return max((row.get("experts_seconds", 0.0) for row, _ in rows.values()), default=0.0)


def stage_minutes(rows: dict) -> float:
    """Minutes of measured stage time behind the rows: the shared experts once, then each run's
    distillation, its evaluation at 500 epochs and its evaluation at LONG_PROTOCOL_EPOCHS."""
    runs = sum(row["distill"] + row["evaluate"] + long["seconds"] for row, long in rows.values())
    return (experts_seconds(rows) + runs) / 60


def write_report(dataset: str, rows: dict, specs: dict, argv: list[str], seconds: float) -> Path:
    """results/<dataset>_ipc50_study.md from the rows (name -> the variant's row and its long evaluation) and
    the specs they vary (method -> (spec, where its lr_img and inputs came from), as `ipc50_spec` gives)."""
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
        "Each run is one of the benchmark's IPC 50 runs as the benchmark makes it (200 iterations, minibatches of "
        "100, checks of three 500-epoch trainings on the validation split, best check kept) or with the change "
        "its name says:",
        "",
    ]
    for method, ((ipc, _, window, lr, inputs), source) in specs.items():
        labels = "learned soft labels" if method == "datm" else "hard labels"
        lines.append(
            f"- {method.upper()} at IPC {ipc}: window [{window[0]}, {window[2]}), lr_img {lr:g}, {inputs} inputs, "
            f"{labels}; the lr_img and inputs from {source}."
        )
    lines += [
        "",
        "`N` is the student steps per iteration. Test accuracy of the kept set (its labels, its learned lr) and of "
        "a random real subset of the same size on the same inputs, three trainings each, with the benchmark's "
        f"protocol (500 epochs) and the reference protocol's {LONG_PROTOCOL_EPOCHS} epochs (lr x0.1 at the "
        "midpoint either way).",
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


def parse(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(dataset, the VARIANTS to run in their order, Hydra overrides) from the command line: `--dataset NAME`
    (default fashion_mnist), `--only NAME,NAME` (default all), the rest overrides. Raises DistillError on an
    unknown flag or variant."""
    dataset, names, extra = "fashion_mnist", list(VARIANTS), []
    args = iter(argv)
    for arg in args:
        if arg in ("--dataset", "--only"):
            value = next(args, None)
            if value is None:
                raise DistillError(f"{arg} needs a value")
            if arg == "--dataset":
                dataset = value
            else:
                wanted = [n for n in value.split(",") if n]
                unknown = [n for n in wanted if n not in VARIANTS]
                if unknown:
                    raise DistillError(f"unknown variant {unknown[0]} in --only: choose from {', '.join(VARIANTS)}")
                names = [n for n in VARIANTS if n in wanted]
        elif arg.startswith("-"):
            raise DistillError(f"unknown flag {arg}: the flags are --dataset and --only")
        else:
            extra.append(arg)
    return dataset, names, extra


def main(argv: list[str]) -> None:
    dataset, names, extra = parse(argv)
    os.chdir(ROOT)
    os.environ.setdefault("WANDB_MODE", "offline")
    rfm.ensure_dataset(dataset)
    bench = rfm.Benchmark(dataset, extra, rfm.training_split_size(dataset, extra))
    started = time.perf_counter()
    specs = {method: ipc50_spec(bench, method) for method in dict.fromkeys(VARIANTS[n][0] for n in names)}
    rows = {}
    for name in names:
        method, changes = VARIANTS[name]
        out = bench.work / "budget" / name
        row = with_random_subset(bench, out, bench.variant(name, specs[method][0], changes))
        rows[name] = (row, evaluate_long(bench, out))
        report = write_report(dataset, rows, specs, argv, time.perf_counter() - started)
    print(report.read_text())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
