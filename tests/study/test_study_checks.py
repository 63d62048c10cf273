"""Clear messages of `study run` before the first job (issue 17, part 4), moved study folders,
and the executors' options for time limits and requeues; no nnU-Net run."""

import json
import shutil

import pytest

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.executors import SlurmExecutor
from pu_nnunet.study.jobs import Job, finished_metrics, mark_finished, mark_started, relative_to_study, write_state
from pu_nnunet.study.spec import Study, load_study, save_study
from pu_nnunet.study.steps import check_folds, check_trainers


def _study(tmp_path, **fields) -> Study:
    paths = {"study_dir": str(tmp_path / "study"), "nnUNet_raw": str(tmp_path / "study" / "nnUNet_raw"),
             "nnUNet_preprocessed": str(tmp_path / "study" / "nnUNet_preprocessed"),
             "nnUNet_results": str(tmp_path / "study" / "nnUNet_results")}
    return Study(dataset_id=302, **fields, paths=paths)


def test_an_unknown_trainer_is_named_with_the_nearest_known_names(tmp_path):
    study = _study(tmp_path, trainers=["nnUNetTrainerPURe_tinny", "nnUNetTrainerPUReBaseline"])
    with pytest.raises(StudyError, match=r"trainer 'nnUNetTrainerPURe_tinny' is neither .*did you mean "
                                         r"nnUNetTrainerPURe_tiny"):
        check_trainers(study)
    # nnU-Net's own trainers and this package's pass
    check_trainers(_study(tmp_path, trainers=["nnUNetTrainer_5epochs", "nnUNetTrainerPURe"]))


def test_folds_are_checked_against_the_split(tmp_path):
    split = tmp_path / "splits_final.json"
    split.write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * 2))
    check_folds(_study(tmp_path, folds=[0, 1]), split)
    with pytest.raises(StudyError, match=r"splits_final.json has 2 folds; the study asks for fold\(s\) \[4\]"):
        check_folds(_study(tmp_path, folds=[0, 4]), split)
    split.write_text("[{")
    with pytest.raises(StudyError, match="splits_final.json is not valid JSON"):
        check_folds(_study(tmp_path), split)


def test_a_moved_study_folder_keeps_its_own_folders_and_finished_runs(tmp_path):
    study = _study(tmp_path, trainers=["nnUNetTrainerPURe"], baseline=None)
    save_study(study)
    job = Job("nnUNetTrainerPURe", 0, 0)
    evaluation = study.study_dir / "runs" / job.name / "evaluation"
    evaluation.mkdir(parents=True)
    (evaluation / "metrics.json").write_text("{}")
    mark_started(study.study_dir, job, "cpu", relative_to_study(study.study_dir, study.study_dir / "train.log"))
    mark_finished(study.study_dir, job, evaluation=relative_to_study(study.study_dir, evaluation))
    moved = tmp_path / "elsewhere" / "study"
    shutil.move(str(study.study_dir), moved)
    loaded = load_study(moved)
    assert loaded.paths["nnUNet_results"] == str(moved.resolve() / "nnUNet_results")
    assert loaded.paths["nnUNet_raw"] == str(moved.resolve() / "nnUNet_raw")
    state = json.loads((moved / "jobs" / f"{job.name}.json").read_text())
    assert state["evaluation"] == f"runs/{job.name}/evaluation" and state["log"] == "train.log"
    assert finished_metrics(moved, job, state) == moved / "runs" / job.name / "evaluation" / "metrics.json"
    # a state written with absolute paths before the move still finds the run at its place
    write_state(moved, job, evaluation=str(study.study_dir / "runs" / job.name / "evaluation"))
    assert finished_metrics(moved, job, json.loads((moved / "jobs" / f"{job.name}.json").read_text())) is not None


def test_the_study_modules_import_each_other_without_a_cycle():
    """Every import between pu_nnunet/study modules, also those inside functions: no cycle (the
    job process once imported its logging helper from the command line module)."""
    import ast
    from pathlib import Path

    import pu_nnunet.study

    folder = Path(pu_nnunet.study.__file__).parent
    modules = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in modules:
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        graph[name] = {m.rsplit(".", 1)[1] for m in imported if m.startswith("pu_nnunet.study.")} & modules

    def reaches(start, target, seen=()):
        return any(n == target or (n not in seen and reaches(n, target, (*seen, n))) for n in graph[start])

    assert "cli_study" not in graph["job"]
    assert [name for name in sorted(modules) if reaches(name, name)] == []


def test_slurm_options_are_checked():
    for options, message in ((dict(max_concurrent=0), "--max-concurrent must be at least 1"),
                             (dict(max_attempts=0), "--max-attempts must be at least 1"),
                             (dict(time_limit_min=2, signal_delay_s=120), "--signal-delay must be"),
                             (dict(signal_delay_s=0), "--signal-delay must be")):
        with pytest.raises(StudyError, match=message):
            SlurmExecutor(**options)
