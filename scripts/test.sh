#!/usr/bin/env bash
# Installs what the tests need (see setup.sh) and runs the default suite over all cores (slow tests excluded;
# `bash scripts/test.sh -m slow` runs those).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
cd "$root"
export WANDB_MODE=disabled
# one pytest-xdist worker per core (at least 2), each with cores / workers torch threads (tests/conftest.py)
workers=$(( $(nproc) > 2 ? $(nproc) : 2 ))
exec "$root/.venv/bin/python" -m pytest -n "$workers" "$@"
