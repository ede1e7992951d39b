#!/usr/bin/env bash
# Maintainers: rerun the digits demo into the committed results/ (tables, records, grids, timings) and
# copy the tables into the README. A user's `bash scripts/demo.sh` writes to runs/results instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec bash "$root/scripts/demo.sh" paths.results=results "$@"
