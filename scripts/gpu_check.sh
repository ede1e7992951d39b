#!/usr/bin/env bash
# The GPU path end to end in a few minutes on one GPU (experts, DATM at IPC 10 with N = 80,
# evaluation, engine benchmark when --reference-dir is given); writes results/gpu.md.
# `bash scripts/gpu_check.sh --dry-run` runs the same stages, tiny, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/gpu_check.py "$@"
