"""The model card: a README.md that ``export-model`` puts into the zip's model folder.

A receiver of a zip sees nnU-Net's folder layout; plans.json names nnU-Net's plain network class
and only debug.json mentions pu-nnunet, so without this card nnUNetv2_predict stops with
"Could not find requested nnunet trainer" and nothing points at the package that provides it.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pu_nnunet
from pu_nnunet.evaluation.report.markdown import table
from pu_nnunet.provenance import short_form
from pu_nnunet.sharing.errors import ExportError
from pu_nnunet.user_files import read_user_json

CARD_FILE = "README.md"
# nnU-Net's validation summary (nnunetv2/evaluation/evaluate_predictions.py): mean over labels
# of the per-label means, and the per-label means keyed by str(label) or str(region)
SUMMARY_FOREGROUND = "foreground_mean"
SUMMARY_PER_LABEL = "mean"
SUMMARY_METRIC = "Dice"
INSTALL_LINE = f"pip install pu-nnunet=={pu_nnunet.__version__}"
EXT_TRAINER_LINE = 'export nnUNet_extTrainer="$(pu-nnunet trainer-path)"'
NO_LICENCE = ("not stated by the exporter (`--data-license` was not given): ask them under which terms the "
              "training data, and so this model, may be used")


def _number(value) -> str:
    return "n/a" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.4f}"


def _label_names(dataset_json: dict) -> dict[str, str]:
    """summary.json key -> label name: nnU-Net keys labels by value and regions by their tuple."""
    names = {}
    for name, value in (dataset_json.get("labels") or {}).items():
        key = str(tuple(value)) if isinstance(value, (list, tuple)) and len(value) > 1 else \
            str(value[0] if isinstance(value, (list, tuple)) else value)
        names[key] = name
    return names


def validation_table(summaries: dict[str, dict | None], dataset_json: dict) -> str:
    """One row per fold: foreground mean Dice and each label's Dice from nnU-Net's summary.json."""
    names = _label_names(dataset_json)
    label_keys = sorted({key for summary in summaries.values() if summary
                         for key in (summary.get(SUMMARY_PER_LABEL) or {})}, key=lambda k: (len(k), k))
    header = ["fold", "foreground mean Dice", *[f"Dice {names.get(key, key)}" for key in label_keys]]
    rows = []
    for fold, summary in summaries.items():
        if summary is None:
            rows.append([fold, "no validation/summary.json", *[""] * len(label_keys)])
            continue
        per_label = summary.get(SUMMARY_PER_LABEL) or {}
        rows.append([fold, _number((summary.get(SUMMARY_FOREGROUND) or {}).get(SUMMARY_METRIC)),
                     *[_number((per_label.get(key) or {}).get(SUMMARY_METRIC)) for key in label_keys]])
    return table(header, rows)


def licence_text(data_license: str | None) -> str:
    """The licence as the card shows it: one line as given; several lines (a licence file's text)
    verbatim in a fenced block, so their own markdown (headings, fences, tables) cannot reshape the
    card. The fence is longer than any run of backticks in the text."""
    text = data_license.strip() if data_license else ""
    if not text:
        return NO_LICENCE
    if "\n" not in text and "\r" not in text:
        return text
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + "text", *text.splitlines(), fence])


def render_card(*, dataset: str, trainer: str, plans_name: str, configuration: str, folds: list[str],
                checkpoint: str, plans: dict, dataset_json: dict, summaries: dict[str, dict | None],
                provenance: dict, is_pu_trainer: bool, data_license: str | None, zip_name: str) -> str:
    model_path = f"$nnUNet_results/{dataset}/{trainer}__{plans_name}__{configuration}"
    folds_text = " ".join(folds)
    config = plans["configurations"][configuration]
    arch = config.get("architecture", {})
    needs = (f"`{trainer}` is a trainer of **pu-nnunet** (product-unit residual U-Nets for nnU-Net v2): nnU-Net "
             "finds it only with pu-nnunet installed and `nnUNet_extTrainer` set; without them nnUNetv2_predict stops "
             f"with \"Could not find requested nnunet trainer {trainer}\"."
             if is_pu_trainer else f"`{trainer}` is one of nnU-Net's own trainers; pu-nnunet is not needed to use it.")
    lines = [
        f"# {trainer} on {dataset} ({configuration})", "",
        needs, "",
        "## Install and predict", "",
        "```bash",
        INSTALL_LINE + "    # pulls in nnU-Net v2 (nnunetv2) as well",
        f"nnUNetv2_install_pretrained_model_from_zip {shlex.quote(zip_name)}",
        EXT_TRAINER_LINE,
        f"nnUNetv2_predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {dataset} -c {configuration} -tr {trainer} "
        f"-p {plans_name} -f {folds_text} -chk {checkpoint}",
        "```", "",
        "or, without setting the variable (pu-nnunet finds its trainers itself):", "",
        "```bash",
        f'pu-nnunet predict -m "{model_path}" -i INPUT -o OUTPUT_FOLDER -f {folds_text} --chk {checkpoint}',
        "```", "",
        "## Model", "",
        table(["field", "value"], [
            ["trainer", f"`{trainer}`"],
            ["pu-nnunet", pu_nnunet.__version__],
            ["plans", f"`{plans_name}` (plans.json; dataset {plans.get('dataset_name', dataset)})"],
            ["configuration", configuration],
            ["network class in plans.json", f"`{arch.get('network_class_name', 'n/a')}`"
             + (" (the trainer builds its PU residual-encoder U-Net from it)" if is_pu_trainer else "")],
            ["patch size", str(config.get("patch_size"))],
            ["spacing", str(config.get("spacing"))],
            ["input channels", ", ".join(f"{k}: {v}" for k, v in (dataset_json.get("channel_names") or {}).items())],
            ["labels", ", ".join(f"{k}: {v}" for k, v in (dataset_json.get("labels") or {}).items())],
            ["folds", folds_text],
            ["checkpoint", checkpoint],
        ]), "",
        f"## Validation (nnU-Net's fold_F/validation/summary.json, {SUMMARY_METRIC} on each fold's held-out cases)", "",
        validation_table(summaries, dataset_json), "",
        "## Data licence", "",
        licence_text(data_license), "",
        "## Provenance", "",
        *short_form(provenance), "",
        "The full record (model: the SHA-256 of each fold's checkpoint; run: code, libraries, files):", "",
        "```json",
        json.dumps(provenance, indent=2, allow_nan=True),
        "```", "",
    ]
    return "\n".join(lines)


def read_summary(path: Path) -> dict | None:
    """nnU-Net's validation summary of one fold, None when absent (nnU-Net writes bare NaN)."""
    if not path.is_file():
        return None
    return read_user_json(path, "validation summary", dict, ExportError, allow_nan=True)
