#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py), set-up included:
#   bash scripts/gpu_check.sh             # on a machine with a CUDA GPU (about 8 minutes on an H100, after set-up)
#   bash scripts/gpu_check.sh --dry-run   # on a CPU: the same steps at toy sizes (CI runs this)
# With no network (an air-gapped GPU node), point PIP_FIND_LINKS at a folder of wheels and set
# PIP_NO_INDEX=1: pip reads both from the environment.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
setup_start=$(date +%s)
source "$repo/scripts/setup.sh"
echo "[gpu_check] set-up took $(( $(date +%s) - setup_start )) s"
cd "$repo"
exec python benchmarks/gpu_check.py "$@"
