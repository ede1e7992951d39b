"""Write digits_demo.md beside the demo's results (runs/results, or results/ for maintainers): the command,
commit, machine, install time and the pipeline's stage timings against the 10-minute budget; when the
committed results/ were refreshed, copy the tables into the README.

Usage (demo.sh does this): .venv/bin/python scripts/demo_report.py SETUP_SECONDS [hydra overrides the demo got...]
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from distill.evaluate.records import git_commit
from distill.io.atomic import atomic_write_bytes
from distill.reports.readme import sync_readme

ROOT = Path(__file__).resolve().parents[1]

BUDGET_SECONDS = 10 * 60


def demo_report(setup_seconds: float, pipeline_timings: dict[str, float], overrides: list[str]) -> str:
    """Markdown: command, commit, machine, a stage/seconds table (install first) and the budget verdict."""
    stages = {
        "install (scripts/setup.sh)": setup_seconds,
        **{k: v for k, v in pipeline_timings.items() if k != "total"},
    }
    total = setup_seconds + pipeline_timings["total"]
    lines = [
        "# Digits demo: the README's first command, timed",
        "",
        f"Command: `{' '.join(['bash scripts/demo.sh', *overrides])}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, "
        f"Python {platform.python_version()}  ",
        "Accuracies: `results/digits.md`. Install time is what `scripts/setup.sh` took in this run "
        "(a fresh machine installs everything; a later run only checks).",
        "",
        "| stage | wall time (s) |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in stages.items()],
        f"| total | {total:.0f} |",
        "",
        f"Total {total / 60:.1f} min: {'within' if total <= BUDGET_SECONDS else '**over**'} the "
        f"{BUDGET_SECONDS // 60}-minute budget.",
    ]
    return "\n".join(lines) + "\n"


def results_folder(overrides: list[str]) -> Path:
    """The folder the demo wrote to: its `paths.results=` override, else the default runs/results."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("paths.results=")]
    return ROOT / (given[-1] if given else "runs/results")


if __name__ == "__main__":
    folder = results_folder(sys.argv[2:])
    timings = json.loads((folder / "digits_pipeline_timings.json").read_text())
    text = demo_report(float(sys.argv[1]), timings, sys.argv[2:])
    atomic_write_bytes(folder / "digits_demo.md", text.encode())
    if folder.resolve() == (ROOT / "results").resolve():
        sync_readme(ROOT)  # the committed tables changed: copy them into the README
    print(text)
