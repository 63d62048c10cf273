#!/usr/bin/env bash
# The main job, with its own set-up: bash scripts/demo.sh [pu-nnunet demo options]
# Trains nnUNetTrainerPURe and its matched baseline on built-in synthetic CT, predicts held-out
# volumes and compares them. Outputs go to ./pu_nnunet_demo unless --workdir says otherwise.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo/scripts/setup.sh"
exec pu-nnunet demo "$@"
