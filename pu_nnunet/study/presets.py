"""Named study presets. ``demo``: built-in synthetic CT (no download), nnU-Net's 2d configuration
with plans sized for a CPU, the short ``_demo`` schedules of PURe and its baseline, fold 0 and
the 6 held-out volumes; ``pu-nnunet demo`` is this preset (see pu_nnunet/demo)."""

from __future__ import annotations

from pu_nnunet.study.cpu_plans import CPU_PLANS

DEMO_DATASET_ID = 900
# 16 training volumes (of which nnU-Net's fold 0 validates on 4) and 6 held-out volumes of 32 slices
DEMO_SYNTHETIC = {"name": "SynthCT", "num_cases": 22, "num_test": 6, "shape": [32, 64, 64],
                  "spacing": [3.0, 0.8, 0.8], "num_organs": 3, "seed": 0}

PRESETS = {
    "demo": {
        "dataset_id": DEMO_DATASET_ID,
        "configuration": "2d",
        "plans": CPU_PLANS,
        "trainers": ["nnUNetTrainerPURe_demo", "nnUNetTrainerPUReBaseline_demo"],
        "folds": [0],
        "repeats": 1,
        "synthetic": DEMO_SYNTHETIC,
    },
}
