"""nnU-Net's final validation folder is read only when finished (pu_nnunet/nnunet_validation.py):
the marker the trainers write before the validation and remove after its summary.json, and a
fold's validation folder without summary.json (killed by an older trainer), are refused by
evaluate and redone by a study (``nnUNetv2_train --val``) instead of scored as missing cases
(issue 30, classes 5 and 4; on main both were read as finished: these tests failed there).
The real signal in the validation: tests/trainers/test_save_on_signal.py (slow)."""

from types import SimpleNamespace

import pytest

from pu_nnunet.cli import main
from pu_nnunet.nnunet_validation import (INCOMPLETE_MARKER, mark_complete, mark_incomplete,
                                         validation_problem)


@pytest.fixture
def fold(tmp_path):
    folder = tmp_path / "T__P__2d" / "fold_0"
    (folder / "validation").mkdir(parents=True)
    (folder / "checkpoint_final.pth").write_bytes(b"")
    return folder


def test_a_validation_is_finished_only_with_its_summary_and_without_the_marker(fold, tmp_path):
    validation = fold / "validation"
    assert "did not finish (no summary.json)" in validation_problem(validation)
    mark_incomplete(validation, "running")
    (validation / "summary.json").write_text("{}")  # an earlier validation's summary
    assert "stopped part-way (.validation_incomplete)" in validation_problem(validation)
    assert mark_complete(validation) and validation_problem(validation) is None
    assert not (validation / INCOMPLETE_MARKER).exists()
    assert validation_problem(tmp_path) is None  # a folder that is no validation


def test_evaluate_refuses_an_unfinished_validation(fold, tmp_path, capsys):
    mark_incomplete(fold / "validation", "running")
    (tmp_path / "labels").mkdir()
    assert main(["evaluate", str(fold / "validation"), str(tmp_path / "labels"), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pu-nnunet evaluate: error: {fold / 'validation'}: nnU-Net's final validation was "
                          "stopped part-way") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("state, expected", [("finished", None), ("marked", "--val"), ("no summary", "--val"),
                                             ("no checkpoint", "--c")])
def test_a_study_redoes_an_unfinished_validation_with_val(fold, tmp_path, monkeypatch, state, expected):
    from pu_nnunet.study.execution import steps
    from pu_nnunet.study.jobs import Job

    validation = fold / "validation"
    (validation / "summary.json").write_text("{}")
    if state == "marked":
        mark_incomplete(validation, "running")
    elif state == "no summary":
        (validation / "summary.json").unlink()
    elif state == "no checkpoint":
        (fold / "checkpoint_final.pth").unlink()
    commands = []
    monkeypatch.setattr(steps, "run_logged", lambda command, *a, **k: commands.append(command))
    study = SimpleNamespace(model_folder=lambda trainer, repeat: fold.parent, dataset_id=990, configuration="2d",
                            plans="nnUNetPlans")
    steps.train(study, Job("nnUNetTrainerPURe_tiny", 0, 0), "cpu", {}, tmp_path / "train.log")
    assert [command[-1] for command in commands] == ([] if expected is None else [expected])
