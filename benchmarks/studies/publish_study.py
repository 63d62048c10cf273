"""Copies what a finished (or partly finished) study shows into the repository, without its models
or predictions: the report, summary and plots, the comparisons, the job states, and per run its
evaluation (per-case metrics, operating points, provenance, report), its robustness evaluations'
per-case metrics, and its learning curves (nnU-Net's training log and training_stability.json).

    python benchmarks/studies/publish_study.py STUDY_DIR benchmarks/studies/NAME

Checkpoints, predictions and probabilities stay in STUDY_DIR (they are large and can be made again
by the study's commands, which the target's README.md should give).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

TOP_FILES = ("report.md", "summary.json", "study.json", "provenance.json", "run_level.json", "status.txt")
# dicom_series: real_ct_slices.py's evaluations of the DICOM series predictions
TOP_FOLDERS = ("plots", "comparisons", "jobs", "dicom_series")
RUN_EVALUATION_FILES = ("per_case.csv", "operating_points.csv", "operating_points.json", "provenance.json", "report.md")
# nnU-Net's progress.png is left out (0.6 MB a run): plots/learning_curves.png draws every run's curve
# from the training logs copied here
MODEL_FILES = ("training_stability.json",)


def _left_out(folder: str, names: list[str]) -> set[str]:
    """Job locks (hidden files), and the robustness comparisons' per-case pairing (0.65 MB a
    condition; rebuilt from the runs' robustness per_case.csv files copied here)."""
    hidden = {name for name in names if name.startswith(".")}
    paired = {"per_case_paired.csv"} if "robustness" in Path(folder).parts else set()
    return hidden | (paired & set(names))


def model_fold(study_dir: Path, state: dict) -> Path | None:
    """The fold folder of a job's model (repeat 0: the study's nnUNet_results; r >= 1: results/repeat_r)."""
    study = json.loads((study_dir / "study.json").read_text())
    paths = study["paths"]
    repeat = state["repeat"]
    root = Path(paths["nnUNet_results"]) if repeat == 0 else study_dir / "results" / f"repeat_{repeat}"
    datasets = sorted(root.glob(f"Dataset{int(study['dataset_id']):03d}_*"))
    if not datasets:
        return None
    return datasets[0] / f"{state['trainer']}__{study['plans']}__{study['configuration']}" / f"fold_{state['fold']}"


def publish(study_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in TOP_FILES:
        if (study_dir / name).is_file():
            shutil.copy2(study_dir / name, target / name)
    for name in TOP_FOLDERS:
        if (study_dir / name).is_dir():
            shutil.copytree(study_dir / name, target / name, dirs_exist_ok=True, ignore=_left_out)
    for job_file in sorted((study_dir / "jobs").glob("*.json")):
        state = json.loads(job_file.read_text())
        run = study_dir / "runs" / job_file.stem
        out = target / "runs" / job_file.stem
        for name in RUN_EVALUATION_FILES:
            if (run / "evaluation" / name).is_file():
                (out / "evaluation").mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / "evaluation" / name, out / "evaluation" / name)
        for condition in sorted((run / "robustness").glob("*/evaluation/per_case.csv")):
            destination = out / "robustness" / condition.parent.parent.name
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(condition, destination / "per_case.csv")
        if (run / "robustness" / "robustness.json").is_file():
            shutil.copy2(run / "robustness" / "robustness.json", out / "robustness" / "robustness.json")
        fold = model_fold(study_dir, state)
        if fold is not None and fold.is_dir():
            (out / "training").mkdir(parents=True, exist_ok=True)
            for path in sorted(fold.glob("training_log_*.txt")) + [fold / name for name in MODEL_FILES]:
                if path.is_file():
                    shutil.copy2(path, out / "training" / path.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    if not (args.study_dir / "study.json").is_file():
        sys.exit(f"{args.study_dir}: no study.json: not a study folder")
    publish(args.study_dir.resolve(), args.target)
    print(f"published {args.study_dir} to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
