"""What a study is (dataset, configuration, plans, trainers, folds, repeats) and its study.json.

The resolved study is written to ``STUDY_DIR/study.json`` before anything runs, so that a run
can be resumed (``study run -o STUDY_DIR`` with no other flag), reproduced and shared. A re-run
whose flags contradict the stored study is refused unless ``--reconfigure`` says so: mixing runs
of two different studies in one report would be silently wrong. The robustness sweep is stored
too but is not part of the identity: adding it is no contradiction, changing or removing it is
(:mod:`pu_nnunet.robustness.settings`).

Repeats: repeat 0 trains into ``nnUNet_results`` as any nnU-Net run does; repeat r >= 1 trains
into its own results root ``STUDY_DIR/results/repeat_r``. The trainer name stays the same (no
generated ``..._r1`` classes for nnU-Net to find), and each repeat's model folder is still
nnU-Net's ``DatasetX/Trainer__Plans__Config/fold_F``, so ``nnUNetv2_predict`` works on it with
``nnUNet_results`` pointed at that root.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from pu_nnunet.evaluation.metrics.run_stats import DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MID
from pu_nnunet.study.errors import StudyError
from pu_nnunet.json_files import write_json
from pu_nnunet.user_files import read_user_json

STUDY_FILE = "study.json"
# inside the study folder: nnU-Net's planning and preprocessing logs, and the results roots of
# repeats >= 1 (repeat 0 trains into nnUNet_results)
LOGS_DIR, RESULTS_DIR = "logs", "results"
STUDY_FORMAT = "pu-nnunet-study/1"
DEFAULT_TRAINERS = ("nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline")
DEFAULT_CONFIGURATION = "2d"
DEFAULT_PLANS = "nnUNetPlans"
DEFAULT_FOLDS = (0,)
# the fields that define a study; anything else (devices, executor) may change between runs
IDENTITY_FIELDS = ("dataset_id", "configuration", "plans", "trainers", "baseline", "folds", "repeats", "held_out",
                   "synthetic")
# the held-out cases a run is scored on: imagesTs (with labelsTs), or the fold's validation cases
HELD_OUT_TEST, HELD_OUT_VALIDATION = "test", "validation"
HELD_OUT_CHOICES = ("auto", HELD_OUT_TEST, HELD_OUT_VALIDATION)
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass
class Study:
    dataset_id: int
    configuration: str = DEFAULT_CONFIGURATION
    plans: str = DEFAULT_PLANS
    trainers: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINERS))
    baseline: Optional[str] = None
    folds: list[int] = field(default_factory=lambda: list(DEFAULT_FOLDS))
    repeats: int = 1
    # which cases score a run: "test" = imagesTs/labelsTs, "validation" = the fold's validation
    # cases (nnU-Net's own fold_F/validation predictions), "auto" = test when the dataset has it
    held_out: str = "auto"
    # generator settings of a built-in synthetic dataset (the demo preset), else None
    synthetic: Optional[dict] = None
    # the robustness sweep after each job (robustness.settings), else None; not an
    # identity field: the trainings do not depend on it
    robustness: Optional[dict] = None
    # the report's minimal important difference (power planning) and equivalence margin, in the
    # score's units (Dice); not identity fields: they change the report, not the runs
    mid: float = DEFAULT_MID
    equivalence_margin: float = DEFAULT_EQUIVALENCE_MARGIN
    # nnU-Net's three folders as resolved when the study was created
    paths: dict = field(default_factory=dict)
    preset: Optional[str] = None

    def __post_init__(self) -> None:
        check_study(self)

    # --- where things are ----------------------------------------------------------------
    def results_root(self, repeat: int) -> Path:
        if repeat == 0:
            return Path(self.paths["nnUNet_results"])
        return Path(self.paths["study_dir"]) / RESULTS_DIR / f"repeat_{repeat}"

    @property
    def study_dir(self) -> Path:
        return Path(self.paths["study_dir"])

    def dataset_folder_name(self) -> str:
        from pu_nnunet.datasets.shared.raw_folder import dataset_folder_name
        from pu_nnunet.datasets.shared.splits import find_raw_dataset

        if self.synthetic is not None:
            return dataset_folder_name(self.dataset_id, self.synthetic["name"])
        try:
            return find_raw_dataset(Path(self.paths["nnUNet_raw"]), self.dataset_id).name
        except Exception as error:  # the converters' SourceLayoutError names the folder
            raise StudyError(str(error)) from None

    def raw_dataset(self) -> Path:
        return Path(self.paths["nnUNet_raw"]) / self.dataset_folder_name()

    def preprocessed_dataset(self) -> Path:
        return Path(self.paths["nnUNet_preprocessed"]) / self.dataset_folder_name()

    def held_out_cases(self, fold: int, held_out: str) -> tuple[Path, Path, Optional[list[str]]]:
        """The images, references and case ids (None: every case) that score a run of ``fold``:
        imagesTs/labelsTs for ``test``, else the fold's validation cases of imagesTr/labelsTr (from
        the split nnU-Net trained with)."""
        from pu_nnunet.datasets.shared.splits import SPLITS_FILE_NAME
        from pu_nnunet.evaluation.evaluate import cases_of_fold

        raw = self.raw_dataset()
        if held_out == HELD_OUT_TEST:
            return raw / "imagesTs", raw / "labelsTs", None
        return raw / "imagesTr", raw / "labelsTr", cases_of_fold(self.preprocessed_dataset() / SPLITS_FILE_NAME, fold)

    def dataset_json(self) -> dict[str, Any]:
        """The raw dataset's dataset.json (a user file: read strictly, a problem names it)."""
        from pu_nnunet.user_files import read_user_json

        content = read_user_json(self.raw_dataset() / "dataset.json", "dataset.json", dict, StudyError)
        if not isinstance(content.get("file_ending"), str):
            raise StudyError(f"{self.raw_dataset() / 'dataset.json'}: no file_ending (nnU-Net's dataset.json names it)")
        return content

    def model_folder(self, trainer: str, repeat: int) -> Path:
        return (self.results_root(repeat) / self.dataset_folder_name()
                / f"{trainer}__{self.plans}__{self.configuration}")

    def identity(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: values[key] for key in IDENTITY_FIELDS}

    def to_json(self) -> dict[str, Any]:
        return {"format": STUDY_FORMAT, **asdict(self)}


def default_baseline(trainers: list[str]) -> Optional[str]:
    """The trainer others are compared with: the one named ...Baseline..., else none."""
    baselines = [t for t in trainers if "Baseline" in t]
    return baselines[0] if len(baselines) == 1 else None


def check_study(study: Study) -> None:
    if not isinstance(study.dataset_id, int) or not 0 <= study.dataset_id <= 999:
        raise StudyError(f"dataset id must be an integer 0-999, got {study.dataset_id!r}")
    if not study.trainers:
        raise StudyError("a study needs at least one trainer")
    if len(set(study.trainers)) != len(study.trainers):
        raise StudyError(f"trainers are listed twice: {study.trainers}")
    if study.baseline is not None and study.baseline not in study.trainers:
        raise StudyError(f"baseline {study.baseline!r} is not one of the trainers {study.trainers}")
    if not study.folds or any(not isinstance(f, int) or f < 0 for f in study.folds):
        raise StudyError(f"folds must be non-negative integers, got {study.folds!r}")
    if len(set(study.folds)) != len(study.folds):
        raise StudyError(f"folds are listed twice: {study.folds}")
    if study.held_out not in HELD_OUT_CHOICES:
        raise StudyError(f"held-out cases must be one of {HELD_OUT_CHOICES}, got {study.held_out!r}")
    if not isinstance(study.repeats, int) or study.repeats < 1:
        raise StudyError(f"repeats must be a positive integer, got {study.repeats!r}")
    for name in ("mid", "equivalence_margin"):
        value = getattr(study, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise StudyError(f"{name} must be a number between 0 and 1 (in Dice), got {value!r}")
    if study.robustness is not None:
        from pu_nnunet.robustness.settings import check_settings

        check_settings(study.robustness)


def study_paths(study_dir: Path) -> dict[str, str]:
    """nnU-Net's folders from the environment, else under the study folder (as the demo did)."""
    paths = {"study_dir": str(study_dir.resolve())}
    for variable in NNUNET_FOLDERS:
        value = os.environ.get(variable)
        paths[variable] = str(Path(value).resolve()) if value else str(study_dir.resolve() / variable)
    return paths


def load_study(study_dir: str | Path) -> Study:
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise StudyError(f"{path} not found: not a study folder (start one with pu-nnunet study run)")
    content = read_user_json(path, STUDY_FILE, error=StudyError)
    if not isinstance(content, dict) or content.get("format") != STUDY_FORMAT:
        raise StudyError(f"{path} is not a {STUDY_FORMAT} file")
    content.pop("format")
    try:
        study = Study(**content)
    except TypeError as error:
        raise StudyError(f"{path}: {error}") from None
    # a study folder that was moved or copied keeps working: its own parts follow the folder,
    # including nnU-Net folders that were inside it (the demo's, a study without nnUNet_* set)
    study.paths = rebased_paths(study.paths, Path(study_dir).resolve())
    return study


def rebased_paths(paths: dict, study_dir: Path) -> dict:
    old = Path(paths["study_dir"]) if paths.get("study_dir") else None
    rebased = {**paths, "study_dir": str(study_dir)}
    for variable in NNUNET_FOLDERS:
        if not paths.get(variable):
            continue
        path = Path(paths[variable])
        if not path.is_absolute():
            rebased[variable] = str(study_dir / path)
        elif old is not None and old != study_dir and path.is_relative_to(old):
            rebased[variable] = str(study_dir / path.relative_to(old))
    return rebased


def save_study(study: Study) -> Path:
    path = study.study_dir / STUDY_FILE
    write_json(path, study.to_json())
    return path


def contradictions(stored: Study, requested: Study) -> list[str]:
    old, new = stored.identity(), requested.identity()
    return [f"{key}: stored {old[key]!r}, requested {new[key]!r}" for key in IDENTITY_FIELDS if old[key] != new[key]]


def read_toml(path: str | Path) -> dict[str, Any]:
    """A study file: top-level keys as the flags' long names (dataset, configuration, plans,
    trainers, baseline, folds, repeats, held_out, mid, equivalence_margin), an optional [executor]
    table and an optional robustness (true, or a [robustness] table: corruptions, strengths, seed,
    mirroring, keep_inputs)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise StudyError("reading a TOML study file needs Python >= 3.11 (or `pip install tomli`)") from None
    path = Path(path)
    try:
        content = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"study file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{path} is not valid TOML: {error}") from None
    known = {"dataset", "configuration", "plans", "trainers", "baseline", "folds", "repeats", "held_out", "executor",
             "robustness", "mid", "equivalence_margin"}
    unknown = sorted(set(content) - known)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
    return content
