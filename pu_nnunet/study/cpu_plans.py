"""Plans sized for a CPU: nnU-Net's own plans with narrower features, the same preprocessed data.

nnU-Net's documented way to customise plans is a renamed copy of the plans file with edited
entries; keeping each configuration's ``data_identifier`` lets the copy reuse the data that
``nnUNetv2_plan_and_preprocess`` already wrote, and ``-p NAME`` selects it in train and predict.
"""

from __future__ import annotations

from pathlib import Path

from pu_nnunet.json_files import NNUNET_INDENT, write_json
from pu_nnunet.user_files import read_user_json

SOURCE_PLANS = "nnUNetPlans"
CPU_PLANS = "nnUNetPlansCPU"
# nnU-Net starts at 32 features and caps 2d networks at 512; half of both keeps the demo's two
# trainings within minutes on 2 cores while the synthetic organs stay easy to learn
CPU_BASE_FEATURES = 16
CPU_MAX_FEATURES = 256
# a fixed small batch keeps one iteration's cost predictable on a CPU
CPU_BATCH_SIZE = 8


def write_cpu_plans(preprocessed_dataset: Path, configuration: str = "2d") -> Path:
    """Writes nnUNetPlansCPU.json beside nnUNetPlans.json and returns its path."""
    plans = read_user_json(preprocessed_dataset / f"{SOURCE_PLANS}.json", "nnU-Net plans", dict, allow_nan=True)
    plans["plans_name"] = CPU_PLANS
    config = plans["configurations"][configuration]
    arch = config["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(CPU_BASE_FEATURES * 2 ** s, CPU_MAX_FEATURES) for s in range(arch["n_stages"])]
    config["batch_size"] = min(config["batch_size"], CPU_BATCH_SIZE)
    return write_json(preprocessed_dataset / f"{CPU_PLANS}.json", plans, indent=NNUNET_INDENT)
