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
needs no lr pilots. Every kept set, and the random subset beside it (one per seed, inputs and network, shared
by the runs), is evaluated on the test split twice, with the benchmark's protocol (500 epochs) and with the
reference protocol's 1000 epochs; the checks that selected the set trained 500 epochs either way. `--only`
runs the named variants (comma-separated), in VARIANTS' order. Writes results/<dataset>_ipc50_study.md, or with
`--only` results/<dataset>_ipc50_study_<name>+<name>.md (`report_path`).
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
    # added after the runs above, before it ran: width 32 (experts, set and evaluation; +1.0 point at IPC 50 in the
    # budget study) and DATM's own N = 80 (+0.8 over two seeds) were each measured alone: do they add up to the
    # published DSA figure (88.7 % on Fashion-MNIST)?
    "datm_ipc50_w32_n80": ("datm", {"width": 32, "syn_steps": 80}),
    # added after the runs above, before it ran: the benchmark trains 4 experts where the official code trains 100,
    # and the best check of the benchmark's IPC 50 run came halfway (iteration 100 of 200): does a set matched to
    # 4 trajectories fit them rather than training in general? The same run from 8 experts (the benchmark's 4,
    # reused, and 4 more of the same recipe); the initial soft labels then average 8 experts' logits
    "datm_ipc50_experts8": ("datm", {"num_experts": 8}),
    # added after that had run (85.6 against 85.4 %), before this ran: every image in every student step, as DATM's
    # CIFAR-10 IPC 50 config does (batch_syn 500 = N_syn), where the benchmark takes minibatches of 100; at N = 80,
    # minibatches of 100 beat minibatches of 25 (86.5 against 85.1 %)
    "datm_ipc50_b500": ("datm", {"batch_syn": 500}),
    # added before it ran: width 32 gains at IPC 10 and 50 but costs about twice the budget. The same width-32 run
    # with every network under bfloat16 autocast (`mixed_precision`: experts, student steps, checks, evaluation and
    # the random subset), about 2x faster per step on this CPU: does the set stay as good?
    "datm_ipc50_w32_bf16": ("datm", {"width": 32, "mixed_precision": True}),
}
LONG_PROTOCOL_EPOCHS = 1000
LONG_FILE = "protocol_1000.json"  # a set's evaluation at LONG_PROTOCOL_EPOCHS (random subsets: `random_subset`)


def ipc50_spec(bench, method: str = "datm", with_window: bool = True) -> tuple[tuple, str]:
    """The benchmark's IPC 50 spec (IPC, method, window, lr_img, inputs) of `method` ("datm" or "mtt") and where
    its lr_img and inputs came from: the benchmark's stored choices, else FALLBACK_CHOICES. The window is the
    rule's, from the validation curve of the experts on those inputs (trained when missing); None without
    stored choices when not `with_window` (every run to make trains its own experts and takes their window)."""
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
    if not with_window:
        window = None
    elif choice["inputs"] == "ZCA":
        window = bench.own_experts({"zca": True})["windows"][name]
    else:
        folder, _ = bench.experts(choice["inputs"])
        cfg = bench.config([])
        plateau = rfm.plateau_epoch(rfm.validation_curve(cfg, folder))
        window = rfm.windows(plateau, cfg.buffers.epochs, cfg.distill.expert_epochs)[name]
    source = f"FALLBACK_CHOICES (CHOICES_RULE 12 on {bench.dataset}; no choices.json)"
    return (50, method, None if window is None else tuple(window), choice["lr_img"], choice["inputs"]), source


def brings_own_experts(name: str) -> bool:
    """Whether variant `name` trains experts of its own (another width, epochs or inputs: EXPERT_SETTINGS), whose
    validation curve gives its window, rather than using the benchmark's."""
    return bool(set(VARIANTS[name][1]) & set(rfm.EXPERT_SETTINGS))


def needs_window(names: list[str], method: str) -> bool:
    """Whether a run of `names` varies `method`'s IPC 50 run on the benchmark's experts, so uses its window."""
    return any(not brings_own_experts(n) for n in names if VARIANTS[n][0] == method)


def run_config(bench, out: Path, epochs: int, results: Path):
    """The config of the finished run in `out` (its recorded overrides) with `epochs` of evaluation training,
    its records written under `results`."""
    recorded = json.loads((out / rfm.TIMING_FILE).read_text())
    overrides = [f"protocol.epochs={epochs}", f"paths.distill={out}", f"paths.results={results}"]
    return bench.config([*recorded["overrides"], *overrides])


def evaluated(cfg, artifact: str | None, baselines: list[str]) -> dict:
    """`run_evaluate` on `artifact` (None: baselines only) and `baselines`, as {"test": [mean, std, runs],
    "<baseline>_test": [...], "lr": the set's lr, "seconds": s}."""
    modes = ["soft"] if cfg.distill.soft_labels else ["hard"]
    evaluation = dataclasses.replace(cfg.eval, artifact=artifact, baselines=baselines, label_modes=modes)
    started = time.perf_counter()
    written = run_evaluate(dataclasses.replace(cfg, eval=evaluation))
    result = {"seconds": round(time.perf_counter() - started, 1)}
    for record in written:
        key = "test" if record["set"] == "distilled" else f"{record['set']}_test"
        result[key] = [record["mean"], record["std"], record["runs"]]
        if record["set"] == "distilled":
            result["lr"] = record.get("lr")
    return result


def evaluate_long(bench, out: Path) -> dict:
    """The set in run folder `out` evaluated on the test split with LONG_PROTOCOL_EPOCHS of training, records
    under `out`/results_1000; reused when `out`/LONG_FILE exists. Returns {"test": [mean, std, runs], "lr": the
    set's lr, "seconds": s} (and "random_test", where an earlier version evaluated the random subset with it)."""
    path = out / LONG_FILE
    if path.is_file():
        return json.loads(path.read_text())
    cfg = run_config(bench, out, LONG_PROTOCOL_EPOCHS, out / f"results_{LONG_PROTOCOL_EPOCHS}")
    result = evaluated(cfg, str(out), [])
    atomic_write_json(path, result)
    return result


def random_subset(bench, out: Path, epochs: int) -> tuple[str, dict]:
    """The random real subset beside the run in `out` (its IPC, seed, inputs and network) evaluated on the test
    split with `epochs` of training. Every run with the same four shares it: kept under
    budget/random_subsets/<those four>/, reused. Returns (its name, {"random_test": [mean, std, runs],
    "seconds": s})."""
    cfg = run_config(bench, out, epochs, out)
    width = cfg.model.options.get("width")
    name = (
        f"ipc{cfg.distill.ipc}_seed{cfg.seed}_{rfm.inputs_of(cfg)}_width{width}{'_bf16' if cfg.mixed_precision else ''}"
    )
    folder = bench.work / "budget" / "random_subsets" / name
    path = folder / f"epochs_{epochs}.json"
    if not path.is_file():
        paths = dataclasses.replace(cfg.paths, results=str(folder))
        atomic_write_json(path, evaluated(dataclasses.replace(cfg, paths=paths), None, ["random"]))
    return f"{name}, {epochs} epochs", json.loads(path.read_text())


def with_random_subsets(bench, out: Path, row: dict, long: dict) -> tuple[dict, dict, dict]:
    """`row` and `long` (the run's evaluations at the benchmark's protocol and at LONG_PROTOCOL_EPOCHS) with
    the random subset beside each: the run's own where it evaluated one (a run on whitened inputs does), else
    the shared `random_subset`. Returns them and the shared subsets taken ({name: seconds})."""
    row, long, shared = dict(row), dict(long), {}
    for result, epochs in ((row, bench.config([]).protocol.epochs), (long, LONG_PROTOCOL_EPOCHS)):
        if result.get("random_test") is None:
            name, subset = random_subset(bench, out, epochs)
            result["random_test"] = subset["random_test"]
            shared[name] = subset["seconds"]
    return row, long, shared


def benchmark_experts_seconds(bench, specs: dict) -> float:
    """The recorded training seconds of the benchmark's experts that the runs of `specs` (method -> (spec,
    source), as `ipc50_spec` made them, which trains missing experts) on standardised inputs use; a run on
    whitened inputs trains its own (`own_experts`)."""
    inputs = dict.fromkeys(spec[4] for spec, _ in specs.values() if spec[4] != "ZCA")
    folders = [bench.config(rfm.INPUTS[kind]).buffers_folder() for kind in inputs]
    return sum(rfm.expert_train_seconds(folder) or 0.0 for folder in folders)


def experts_seconds(rows: dict, benchmark_experts: float = 0.0) -> float:
    """The training time of the experts behind the rows: `benchmark_experts`, the seconds of the benchmark's
    experts that runs on standardised inputs use, plus the runs' own experts (whitened: `own_experts`), which
    they share, once."""
    return benchmark_experts + max((row.get("experts_seconds", 0.0) for row, _ in rows.values()), default=0.0)


def stage_minutes(rows: dict, shared: dict, benchmark_experts: float = 0.0) -> float:
    """Minutes of measured stage time behind the rows: the experts once (`experts_seconds`), then each run's
    distillation, its evaluation at 500 epochs and its evaluation at LONG_PROTOCOL_EPOCHS, and each shared
    random subset (`shared`: name -> seconds) once."""
    runs = sum(row["distill"] + row["evaluate"] + long["seconds"] for row, long in rows.values())
    return (experts_seconds(rows, benchmark_experts) + runs + sum(shared.values())) / 60


def report_path(dataset: str, names: list[str]) -> Path:
    """Where the report of a run of the variants `names` goes: results/<dataset>_ipc50_study.md when they are all
    of VARIANTS, else a file named after them (results/<dataset>_ipc50_study_<name>+<name>.md), so that an
    invocation with `--only` never replaces the report of the whole study with a few of its rows."""
    suffix = "" if list(names) == list(VARIANTS) else "_" + "+".join(names)
    return ROOT / "results" / f"{dataset}_ipc50_study{suffix}.md"


def write_report(
    dataset: str,
    rows: dict,
    specs: dict,
    shared: dict,
    argv: list[str],
    seconds: float,
    benchmark_experts: float = 0.0,
    out: Path | None = None,
) -> Path:
    """The report at `out` (default: `report_path` of every variant) from the rows (name -> the variant's row and
    its long evaluation), the specs they vary (method -> (spec, where its lr_img and inputs came from), as
    `ipc50_spec` gives), the shared random subsets beside them (name -> seconds) and `benchmark_experts`
    (`experts_seconds`). Returns `out`."""
    experts = experts_seconds(rows, benchmark_experts)
    command = " ".join([".venv/bin/python scripts/ipc50_study.py", *argv])
    lines = [
        f"# {dataset}: levers at IPC 50 beyond the benchmark's settings",
        "",
        f"Command: `{command}`  ",
        f"Commit: {git_commit(ROOT)}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU  ",
        f"Measured stage time: {stage_minutes(rows, shared, benchmark_experts):.1f} min (the experts {experts:.0f} s, "
        f"counted once; every distillation and evaluation; the random subsets that runs share, "
        f"{sum(shared.values()):.0f} s, counted once); this invocation's wall time: "
        f"{seconds / 60:.1f} min (finished stages are reused, not timed again)",
        "",
        "Each run is one of the benchmark's IPC 50 runs as the benchmark makes it (200 iterations, minibatches of "
        "100, checks of three 500-epoch trainings on the validation split, best check kept) or with the change "
        "its name says:",
        "",
    ]
    for method, ((ipc, _, window, lr, inputs), source) in specs.items():
        labels = "learned soft labels" if method == "datm" else "hard labels"
        where = f"window [{window[0]}, {window[2]})" if window is not None else "the rule's window"
        own = [
            f"{name} [{row['window'][0]}, {row['window'][2]}) from its own experts"
            for name, (row, _) in rows.items()
            if VARIANTS[name][0] == method and brings_own_experts(name)
        ]
        lines.append(
            f"- {method.upper()} at IPC {ipc}: {where}{' (' + '; '.join(own) + ')' if own else ''}, lr_img {lr:g}, "
            f"{inputs} inputs, {labels}; the lr_img and inputs from {source}."
        )
    lines += [
        "",
        "`width` is the ConvNet's (experts, set, checks and evaluation), `precision` its arithmetic (`bf16 mixed`: "
        "every network under bfloat16 autocast), `experts` how many expert trajectories the run matched, `N` its "
        "student steps per iteration. Test "
        "accuracy of the kept set (its labels, its learned lr) and of "
        "a random real subset of the same size on the same inputs, three trainings each, with the benchmark's "
        f"protocol (500 epochs) and the reference protocol's {LONG_PROTOCOL_EPOCHS} epochs (lr x0.1 at the "
        "midpoint either way). Runs of one seed, inputs and network share one random subset, evaluated once; "
        "a run's evaluation seconds are its set's.",
        "",
        "| run | width | precision | experts | N | distillation s | best validation (iteration) | skipped updates "
        "| learned lr "
        f"| test, 500 epochs | test, {LONG_PROTOCOL_EPOCHS} epochs | random subset, 500 / {LONG_PROTOCOL_EPOCHS} "
        f"epochs | evaluation s, 500 / {LONG_PROTOCOL_EPOCHS} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (row, long) in rows.items():
        best = row["best"] or {}
        lines.append(
            f"| {name} | {row.get('width', '?')} | {row.get('precision', 'float32')} | {row.get('num_experts', '?')} "
            f"| {row['syn_steps']} | {row['distill']:.0f} "
            f"| {best.get('score', float('nan')):.3f} "
            f"({best.get('iteration', '?')}) | {row['skipped']} | {long.get('lr') or float('nan'):.4f} "
            f"| {rfm.test_cell_text(row.get('test'))} | {rfm.test_cell_text(long.get('test'))} "
            f"| {rfm.test_cell_text(row.get('random_test'))} / {rfm.test_cell_text(long.get('random_test'))} "
            f"| {row['evaluate']:.0f} / {long['seconds']:.0f} |"
        )
    out = out or report_path(dataset, list(VARIANTS))
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
    methods = dict.fromkeys(VARIANTS[n][0] for n in names)
    specs = {method: ipc50_spec(bench, method, needs_window(names, method)) for method in methods}
    benchmark_experts = benchmark_experts_seconds(bench, specs)
    rows, shared = {}, {}
    for name in names:
        method, changes = VARIANTS[name]
        out = bench.work / "budget" / name
        row = bench.variant(name, specs[method][0], changes)
        row, long, taken = with_random_subsets(bench, out, row, evaluate_long(bench, out))
        rows[name], shared = (row, long), {**shared, **taken}
        seconds = time.perf_counter() - started
        report = write_report(
            dataset, rows, specs, shared, argv, seconds, benchmark_experts, report_path(dataset, names)
        )
    print(report.read_text())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
