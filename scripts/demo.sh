#!/usr/bin/env bash
# The main job end to end on the embedded digits dataset: 5 experts, DATM at IPC 1 and 10, evaluation
# against a random real subset and the full training set. Prints the table and where the image grids
# are; writes only ignored folders (runs/, buffers/), never tracked files. Extra arguments are config
# overrides, e.g. `bash scripts/demo.sh logger=wandb`. Maintainers refresh the committed results/ and
# the README with `bash scripts/refresh_results.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS
bash "$root/scripts/setup.sh"
setup_seconds=$((SECONDS - started))
cd "$root"
export WANDB_MODE="${WANDB_MODE:-offline}"
"$root/.venv/bin/distill-pipeline" experiment=digits_demo "$@"
"$root/.venv/bin/python" "$root/scripts/demo_report.py" "$setup_seconds" "$@"
