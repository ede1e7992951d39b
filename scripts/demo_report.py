"""Write results/digits_demo.md after `bash scripts/demo.sh`: the command, commit, machine, install time
and the pipeline's stage timings against the 10-minute budget; then copy the tables into the README.

Usage (demo.sh does this): .venv/bin/python scripts/demo_report.py SETUP_SECONDS [hydra overrides the demo got...]
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from distill.evaluate.records import git_commit  # noqa: E402
from distill.io.atomic import atomic_write_bytes  # noqa: E402
from sync_readme import sync_readme  # noqa: E402

BUDGET_SECONDS = 10 * 60


def demo_report(setup_seconds: float, pipeline_timings: dict[str, float], overrides: list[str]) -> str:
    """Markdown: command, commit, machine, a stage/seconds table (install first) and the budget verdict."""
    stages = {"install (scripts/setup.sh)": setup_seconds, **{k: v for k, v in pipeline_timings.items() if k != "total"}}
    total = setup_seconds + pipeline_timings["total"]
    lines = ["# Digits demo: the README's first command, timed", "",
             f"Command: `bash scripts/demo.sh {' '.join(overrides)}`".rstrip() + "  ",
             f"Commit: {git_commit()}  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}, "
             f"Python {platform.python_version()}  ",
             "Accuracies: `results/digits.md`. Install time is what `scripts/setup.sh` took in this run "
             "(a fresh machine installs everything; a later run only checks).", "",
             "| stage | wall time (s) |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in stages.items()],
             f"| total | {total:.0f} |", "",
             f"Total {total / 60:.1f} min: {'within' if total <= BUDGET_SECONDS else '**over**'} the "
             f"{BUDGET_SECONDS // 60}-minute budget."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    timings = json.loads((ROOT / "results" / "digits_pipeline_timings.json").read_text())
    text = demo_report(float(sys.argv[1]), timings, sys.argv[2:])
    atomic_write_bytes(ROOT / "results" / "digits_demo.md", text.encode())
    sync_readme(ROOT)
    print(text)
