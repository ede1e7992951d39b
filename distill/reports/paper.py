"""The DATM paper's Table 1 and the comparison of measured records against it."""

from __future__ import annotations

from distill.evaluate.records import git_commit, machine, newest_per_cell

# DATM paper Table 1 (docs/method.md §4): DATM, Random, full dataset, in %.
PAPER = {
    "cifar10": {
        "datm": {1: 46.9, 10: 66.8, 50: 76.1, 500: 83.5, 1000: 85.5},
        "random": {1: 15.4, 10: 31.0, 50: 50.6, 500: 73.2, 1000: 78.4},
        "full": 84.8,
    },
    "cifar100": {
        "datm": {1: 27.9, 10: 47.2, 50: 55.0, 100: 57.5},
        "random": {1: 4.2, 10: 14.6, 50: 33.4, 100: 42.8},
        "full": 56.2,
    },
    "tiny": {"datm": {1: 17.1, 10: 31.1, 50: 39.7}, "random": {1: 1.4, 10: 5.0, 50: 15.0}, "full": 37.6},
}

# The dataset name the records carry, per paper key.
DATASET_NAME = {"cifar10": "cifar10", "cifar100": "cifar100", "tiny": "tiny_imagenet"}


def _measured(record: dict | None) -> str:
    return "–" if record is None else f"{100 * record['mean']:.1f} ± {100 * record['std']:.1f} (n={record['runs']})"


def comparison_rows(records: list[dict], paper: dict) -> list[str]:
    """Markdown rows, one per paper IPC and selection rule that has a measured ConvNet DATM or random record:
    DATM (soft labels), random subset and full set, each measured (newest record of its cell) beside Table 1."""
    latest = [r for r in newest_per_cell(records) if r["architecture"] == "convnet"]
    full = next((r for r in latest if r["set"] == "full"), None)
    randoms = {r["ipc"]: r for r in latest if r["set"] == "random" and r["labels"] == "hard"}
    datms = {
        (r["ipc"], r.get("selection") or "–"): r
        for r in latest
        if r["set"] == "distilled" and r["method"] == "datm" and r["labels"] == "soft"
    }
    rows = []
    for ipc in sorted(paper["datm"]):
        rules = sorted(rule for i, rule in datms if i == ipc) or (["–"] if ipc in randoms else [])
        for rule in rules:
            rows.append(
                f"| {ipc} | {rule} | {_measured(datms.get((ipc, rule)))} | {paper['datm'][ipc]} | "
                f"{_measured(randoms.get(ipc))} | {paper['random'][ipc]} | {_measured(full)} | {paper['full']} |"
            )
    return rows


def comparison_report(dataset: str, records: list[dict], timings: dict[str, float], command: str) -> str:
    """The whole results/<dataset>_paper_comparison.md text."""
    lines = [
        f"# {dataset}: measured against the DATM paper (Table 1)",
        "",
        f"Command: `{command}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {machine()}  ",
        f"Wall time of this invocation: {sum(timings.values()) / 60:.1f} min",
        "",
        "Measured cells are the newest evaluation records in `results/records/` (any invocation); the "
        "full-set baseline trains `eval.full_epochs` epochs, the paper's full-set figure is its own. "
        "Selection rule: how the measured set was picked among its iterations. The paper picked its sets "
        "by test accuracy (`--selection test` reproduces that, with experts, ZCA and initialisation on the "
        "whole training set); `best validation accuracy` never looks at the test split.",
        "",
        "| IPC | selection rule | DATM measured | DATM paper (best test accuracy) | random measured | "
        "random paper | full measured | full paper |",
        "|---|---|---|---|---|---|---|---|",
        *comparison_rows(records, PAPER[dataset]),
        "",
        "| stage (this invocation) | wall time (s) |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in timings.items()],
    ]
    return "\n".join(lines) + "\n"
