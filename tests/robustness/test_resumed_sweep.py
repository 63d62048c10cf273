"""A robustness sweep resumed in its folder re-checks its models (issue 30, class 4): results
made with other weights (the checkpoint replaced between the interrupted run and the resumed
one) are refused, naming the model, instead of reported beside the new weights' results. On
main the resumed sweep reused them (report: "change -0.43"); this test failed there."""

import json

from pu_nnunet.cli import main


def fake_model(folder):
    """What the sweep reads of a model folder before loading its weights."""
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1},
                                                     "file_ending": ".nii.gz"}))
    (folder / "plans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    return folder


def test_a_resumed_sweep_refuses_a_replaced_checkpoint(tmp_path, capsys):
    model = fake_model(tmp_path / "Dataset001_X" / "T__P__2d")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"first weights")
    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "labelsTs").mkdir()
    (tmp_path / "imagesTs" / "case_0000.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    argv = ["robustness", "-m", f"PURe={model}", "-i", str(tmp_path / "imagesTs"), "-r", str(tmp_path / "labelsTs"),
            "-o", str(out), "--corruptions", "gamma", "--strengths", "gamma=2"]
    assert main(argv) == 1  # begun, then stopped (the stand-in weights cannot be loaded)
    capsys.readouterr()
    recorded = json.loads((out / "models.json").read_text())
    assert set(recorded) == {"PURe_0"} and len(recorded["PURe_0"]["checkpoint_sha256"]["0"]) == 64
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"other weights")  # replaced meanwhile
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"pu-nnunet robustness: error: {out / 'models.json'}: the sweep in {out} began with other "
                          "weights of PURe_0 (checkpoint_sha256 differ") and err.count("\n") == 1
    (out / "models.json").unlink()  # a sweep begun by an earlier pu-nnunet: nothing to check against
    assert main(argv) == 1
    assert "recorded no model checkpoints" in capsys.readouterr().err


def test_a_damaged_settings_or_models_file_is_an_error_naming_it(tmp_path):
    """Issue 28: the sweep's own files in a user's output folder go through the one user-JSON reader."""
    import pytest

    from pu_nnunet.robustness.errors import RobustnessError
    from pu_nnunet.robustness.sweep import MODELS_FILE, SETTINGS_FILE, check_output_folder, check_resumed_models

    (tmp_path / SETTINGS_FILE).write_text("")
    with pytest.raises(RobustnessError, match=f"^{tmp_path / SETTINGS_FILE}: sweep settings is not valid JSON "
                                              r"\(empty file\)"):
        check_output_folder(tmp_path, {"seed": 0}, overwrite=False)
    (tmp_path / MODELS_FILE).write_text('["A"]')
    with pytest.raises(RobustnessError, match=f"^{tmp_path / MODELS_FILE}: record of the sweep's models must hold"):
        check_resumed_models(tmp_path, {"A": {}})
