#!/usr/bin/env bash
# GPU recipe for cifar10: experts, DATM with the paper's presets (configs/experiment/datm_cifar10_ipc*.yaml),
# evaluation, and results/cifar10_paper_comparison.md with the DATM paper's Table 1 beside the measured numbers.
# Downloads the dataset into data/ on first use. Extra arguments go to scripts/reproduce_paper.py, e.g.
#   bash scripts/reproduce_cifar10.sh --ipc 10 --experts 10 distill.iterations=2000   (a cheaper, weaker run)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/reproduce_paper.py cifar10 --ipc 1 10 50 dataset.download=true "$@"
