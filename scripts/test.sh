#!/usr/bin/env bash
# The test suite, with its own set-up: bash scripts/test.sh [pytest arguments]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
cd "$repo"
# nnU-Net's default of 8 worker processes only slows a small CPU machine down
export nnUNet_def_n_proc="${nnUNet_def_n_proc:-1}"
# one pytest worker per core, each computing on one thread (two threads per worker would
# oversubscribe the cores); nnUNetv2_train of this package's trainers honours PU_NNUNET_CPU_THREADS
workers="${PU_NNUNET_TEST_WORKERS:-$(nproc)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PU_NNUNET_CPU_THREADS="${PU_NNUNET_CPU_THREADS:-1}"
# --no-loadscope-reorder: keep the longest-first order of tests/conftest.py (xdist would sort groups by
# their number of tests, which puts the few-test, minutes-long modules last)
exec python -m pytest -n "$workers" --dist loadgroup --no-loadscope-reorder "$@"
