#!/usr/bin/env bash
# Installs what the tests need (see setup.sh) and runs the default suite (slow tests excluded;
# `bash scripts/test.sh -m slow` runs those).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
cd "$root"
export WANDB_MODE=disabled
exec "$root/.venv/bin/python" -m pytest "$@"
