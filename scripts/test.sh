#!/usr/bin/env bash
# The test suite, with its own set-up: bash scripts/test.sh [pytest arguments]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
cd "$repo"
# nnU-Net's default of 8 worker processes only slows a small CPU machine down
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}"
exec python -m pytest "$@"
