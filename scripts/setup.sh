#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs pu-nnunet
# with nnU-Net v2 and the test tools into it. Safe to run again: pip skips what is present.
# Sourced by scripts/demo.sh and scripts/test.sh; PU_NNUNET_VENV picks another location.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PU_NNUNET_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
stamp="$venv/.pu_nnunet_installed"
# reinstall only when the project's dependencies changed since the last install
if [ ! -f "$stamp" ] || [ "$repo/pyproject.toml" -nt "$stamp" ]; then
    echo "[setup] installing pu-nnunet and nnU-Net v2 into $venv (first time: several minutes, torch is large)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$repo[test]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
