#!/usr/bin/env bash
# The CPU benchmark's distilled sets (ConvNet width 16) tested on ConvNet-128, the network of the
# published Fashion-MNIST figures, beside a random real subset of the same size on that network: the
# benchmark's protocol (500 epochs, 3 runs, each set's learned lr, DATM's soft labels and MTT's hard ones),
# nothing re-distilled or re-selected.
#
# Usage: bash scripts/evaluate_on_convnet128.sh RUNS_DIR [SETS...]
#   RUNS_DIR: the benchmark's run folders (runs/<dataset>_benchmark after scripts/reproduce_fashion_mnist.py)
#   SETS: run names (default: datm_ipc1 mtt_ipc1 datm_ipc10 mtt_ipc10); the first set of each IPC also
#   evaluates the random subset. Records and the table go to $RESULTS (default runs/results_convnet128).
#   An interrupted set resumes with the runs it had finished (distill-eval's own resume); a set that
#   finished is evaluated again, replacing its records.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:?give the runs folder of the benchmark, e.g. runs/fashion_mnist_benchmark}
shift
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(datm_ipc1 mtt_ipc1 datm_ipc10 mtt_ipc10)
export WANDB_MODE="${WANDB_MODE:-disabled}"
declare -A baseline_done=()
for name in "${sets[@]}"; do
  [ -f "$runs/$name/distilled.safetensors" ] || { echo "error: no $runs/$name/distilled.safetensors: run the benchmark first" >&2; exit 2; }
  ipc=${name##*ipc}
  ipc=${ipc%%_*}
  baselines="[]"
  if [ -z "${baseline_done[$ipc]:-}" ]; then baselines="[random]"; baseline_done[$ipc]=1; fi
  started=$SECONDS
  "$root/.venv/bin/distill-eval" experiment=benchmark_cpu progress=false "eval.artifact=$runs/$name" \
    "eval.architectures=[{name:convnet,width:128}]" "eval.baselines=$baselines" "eval.label_modes=[soft]" \
    "paths.results=${RESULTS:-runs/results_convnet128}"
  echo "$name: $((SECONDS - started)) s"
done
