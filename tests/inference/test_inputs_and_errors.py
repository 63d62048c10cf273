"""Which files make a case, and the one-line errors for bad input (no trained model needed)."""

import os

import pytest
import SimpleITK as sitk
import torch

from pu_nnunet.cli import main
from pu_nnunet.inference import PredictionError
from pu_nnunet.inference.inputs import check_channels, find_input_cases
from pu_nnunet.inference.model_folder import inspect_model_folder
from pu_nnunet.trainers.registry import trainer_lookup_path
from pu_nnunet.trainers import EXT_TRAINER_DIR


def case_table(cases):
    return {case.case_id: [f.name for f in case.channel_files] for case in cases}


def test_folder_cases_follow_nnunet_naming_and_plain_names(tmp_path, volume_writer):
    for name in ("a_0000.nii.gz", "b.nii.gz", "amos_0001.nii.gz", "c.nii"):
        volume_writer(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    # for a one-channel model a numbered name is a case of its own, not a second channel
    assert case_table(find_input_cases(tmp_path, 1)) == {
        "a": ["a_0000.nii.gz"], "amos_0001": ["amos_0001.nii.gz"], "b": ["b.nii.gz"], "c": ["c.nii"]}


def test_channels_are_grouped_in_order_for_a_multichannel_model(tmp_path, volume_writer):
    for name in ("x_0001.nii.gz", "x_0000.nii.gz", "y_0000.nii.gz", "y_0001.nii.gz"):
        volume_writer(tmp_path / name)
    assert case_table(find_input_cases(tmp_path, 2)) == {"x": ["x_0000.nii.gz", "x_0001.nii.gz"],
                                                         "y": ["y_0000.nii.gz", "y_0001.nii.gz"]}
    # a single file given for a two-channel model brings its sibling channel along
    single = find_input_cases(tmp_path / "y_0000.nii.gz", 2)
    assert case_table(single) == {"y": ["y_0000.nii.gz", "y_0001.nii.gz"]}


def test_missing_channel_file_is_named(tmp_path, volume_writer):
    volume_writer(tmp_path / "x_0000.nii.gz")
    with pytest.raises(PredictionError, match=r"x_0001\.nii\.gz is missing: the model expects 2 channels"):
        find_input_cases(tmp_path, 2)


def test_two_inputs_for_one_output_are_refused(tmp_path, volume_writer):
    volume_writer(tmp_path / "a_0000.nii.gz")
    volume_writer(tmp_path / "a.nii.gz")
    with pytest.raises(PredictionError, match=r"would both be written to a\.nii\.gz"):
        find_input_cases(tmp_path, 1)
    (tmp_path / "a.nii.gz").unlink()
    volume_writer(tmp_path / "a_0000.nii")
    with pytest.raises(PredictionError, match=r"a_0000\.nii and .*a_0000\.nii\.gz would both be written to a\.nii\.gz"):
        find_input_cases(tmp_path, 1)


def test_dicom_folder_is_one_case_named_after_the_folder(tmp_path, volume_writer, dicom_writer):
    image = sitk.ReadImage(str(volume_writer(tmp_path / "v.nii.gz")))
    folder = dicom_writer(image, tmp_path / "patient_7")
    (case,) = find_input_cases(folder, 1)
    assert case.is_dicom and case.case_id == "patient_7" and case.output_name == "patient_7.nii.gz"


def test_a_four_dimensional_file_counts_its_channels(tmp_path, volume_writer):
    volume = sitk.ReadImage(str(volume_writer(tmp_path / "v.nii.gz")))
    (tmp_path / "two").mkdir()
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(tmp_path / "two" / "m.nii.gz"))
    cases = find_input_cases(tmp_path / "two" / "m.nii.gz", 2)
    check_channels(cases, {"0": "T1", "1": "T2"})
    with pytest.raises(PredictionError, match=r"expects 1 channel\(s\) \(CT\) but this input has 2"):
        check_channels(cases, {"0": "CT"})


def predict_cli(capsys, *args):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert str(fragment) in err, err


def test_folder_without_images(tmp_path, model_stub, capsys):
    (tmp_path / "empty").mkdir()
    code, err = predict_cli(capsys, "-i", tmp_path / "empty", "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, "no NIfTI images", tmp_path / "empty")


def test_unreadable_file(tmp_path, model_stub, capsys):
    bad = tmp_path / "in" / "broken_0000.nii.gz"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a NIfTI file")
    code, err = predict_cli(capsys, "-i", bad.parent, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{bad}: not a gzip-compressed file")


def test_missing_input_and_non_nifti_file(tmp_path, model_stub, capsys):
    code, err = predict_cli(capsys, "-i", tmp_path / "nowhere", "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, "input not found", tmp_path / "nowhere")
    text = tmp_path / "scan.png"
    text.write_bytes(b"png")
    code, err = predict_cli(capsys, "-i", text, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, "is not a NIfTI file", text)


def test_model_folder_without_checkpoint_names_the_expected_path(tmp_path, plain_plans, capsys, volume_writer,
                                                                stub_factory):
    unfinished = stub_factory(tmp_path / "unfinished", plain_plans, folds=())
    (unfinished / "fold_0").mkdir()
    image = volume_writer(tmp_path / "in" / "a_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", unfinished)
    assert_one_line_error(code, err, "no checkpoint", unfinished / "fold_0" / "checkpoint_final.pth")
    # a fold asked for by name must have its checkpoint
    one_fold = stub_factory(tmp_path / "one_fold", plain_plans, folds=(0,))
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", one_fold, "-f", "0", "3")
    assert_one_line_error(code, err, one_fold / "fold_3" / "checkpoint_final.pth", "checkpoint not found")


def test_model_folder_without_plans(tmp_path, model_stub, capsys, volume_writer):
    (model_stub / "plans.json").unlink()
    code, err = predict_cli(capsys, "-i", volume_writer(tmp_path / "a.nii.gz"), "-o", tmp_path / "out",
                            "-m", model_stub)
    assert_one_line_error(code, err, model_stub / "plans.json", "is missing")


def test_wrong_channel_count_names_the_input(tmp_path, plain_plans, capsys, volume_writer, stub_factory):
    model = stub_factory(tmp_path / "model", plain_plans, channel_names=("T1", "T2"))
    image = volume_writer(tmp_path / "in" / "case.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model)
    assert_one_line_error(code, err, image, "expects 2 channel(s) (T1, T2) but this input has 1")


def test_existing_output_is_not_overwritten(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    existing = tmp_path / "out" / "case.nii.gz"
    existing.parent.mkdir()
    existing.write_bytes(b"an earlier result")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, existing, "--overwrite")
    assert existing.read_bytes() == b"an earlier result"


def test_broken_checkpoint_is_reported_with_the_model_folder(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub, "--device", "cpu")
    assert_one_line_error(code, err, "cannot load the model", model_stub)
    assert not (tmp_path / "out" / "case.nii.gz").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when no GPU is present")
def test_cuda_without_gpu(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub, "--device", "cuda")
    assert_one_line_error(code, err, "--device 'cuda': torch sees no CUDA GPU")


def test_batch_size_must_be_positive(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub, "--batch-size", "0")
    assert_one_line_error(code, err, "--batch-size must be at least 1")


def test_trainer_lookup_path_keeps_the_users_folders_and_restores_them(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    with trainer_lookup_path():
        with trainer_lookup_path():  # listed once
            assert os.environ["nnUNet_extTrainer"].split(os.pathsep) == [str(tmp_path), EXT_TRAINER_DIR]
    assert os.environ["nnUNet_extTrainer"] == str(tmp_path)
    monkeypatch.delenv("nnUNet_extTrainer")
    with pytest.raises(KeyError):  # restored on errors too
        with trainer_lookup_path():
            assert os.environ["nnUNet_extTrainer"] == EXT_TRAINER_DIR
            raise KeyError("checkpoint")
    assert "nnUNet_extTrainer" not in os.environ


def test_folds_default_to_those_with_a_checkpoint(tmp_path, plain_plans, stub_factory):
    model = stub_factory(tmp_path / "model", plain_plans, folds=(0, 2))
    (model / "fold_1").mkdir()  # unfinished fold: no checkpoint
    (model / "fold_all").mkdir()
    assert inspect_model_folder(model).folds == (0, 2)
    assert inspect_model_folder(model, folds=["2"]).folds == (2,)
