"""Inputs ``pu-nnunet predict`` cannot read one way only: NIfTI headers whose sform and qform
disagree or whose sform is sheared, broken symbolic links, and channel files that a one-channel
model would take for separate cases."""

import numpy as np
import pytest

from pu_nnunet.cli import main
from pu_nnunet.user_files import damaged_file_problem


def predict_cli(capsys, *args):
    code = main(["predict", *map(str, args)])
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *parts):
    assert code == 1 and err.startswith("pu-nnunet predict: error: ") and err.count("\n") == 1, err
    for part in parts:
        assert str(part) in err, err


def rewrite_forms(path, qform=None, sform=None):
    """Rewrites the header's qform and/or sform (code 1) as given, voxels kept."""
    import nibabel

    image = nibabel.load(path)
    image = nibabel.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header)
    if qform is not None:
        image.set_qform(qform, code=1)
    if sform is not None:
        image.set_sform(sform, code=1)
    nibabel.save(image, path)
    return path


def test_a_volume_written_by_simpleitk_is_unambiguous(tmp_path, volume_writer):
    # flipped axes, anisotropic spacing: float32 storage of both forms stays within the tolerance
    assert damaged_file_problem(volume_writer(tmp_path / "a.nii.gz", shape_zyx=(6, 40, 50))) is None


def test_sform_and_qform_that_disagree_are_refused(tmp_path, model_stub, capsys, volume_writer):
    import nibabel

    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    affine = nibabel.load(image).affine
    moved = affine.copy()
    moved[0, 3] += 4.0  # the qform puts the volume 4 mm to the side
    rewrite_forms(image, qform=moved)
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{image}: sform (code 1) and qform (code 1) disagree: the same voxel lies up to "
                                     "4 mm apart", "img.set_qform(img.get_sform())")
    assert not (tmp_path / "out").exists()


def test_a_sheared_sform_is_refused(tmp_path, model_stub, capsys, volume_writer):
    import nibabel

    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    sheared = nibabel.load(image).affine.copy()
    # the second axis tilted 5 degrees towards the first, its length (the voxel size) kept
    length = np.linalg.norm(sheared[:3, 1])
    tilt = np.radians(5)
    first = sheared[:3, 0] / np.linalg.norm(sheared[:3, 0])
    second = sheared[:3, 1] / length
    sheared[:3, 1] = length * (np.cos(tilt) * second + np.sin(tilt) * first)
    rewrite_forms(image, sform=sheared)
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{image}: the sform holds a shear (its axes are 5.00 degrees off perpendicular)")


def test_a_broken_symbolic_link_among_the_inputs_is_named(tmp_path, model_stub, capsys, volume_writer):
    volume_writer(tmp_path / "in" / "a_0000.nii.gz")
    link = tmp_path / "in" / "b_0000.nii.gz"
    link.symlink_to(tmp_path / "moved" / "b_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{link}: broken symbolic link (its target {tmp_path / 'moved' / 'b_0000.nii.gz'} "
                                     "does not exist)")
    code, err = predict_cli(capsys, "-i", link, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{link}: broken symbolic link")


def test_two_channel_files_given_to_a_one_channel_model(tmp_path, model_stub, capsys, volume_writer):
    volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    volume_writer(tmp_path / "in" / "case_0001.nii.gz")
    volume_writer(tmp_path / "in" / "amos_0001.nii.gz")  # a numbered case name alone stays a case
    code, err = predict_cli(capsys, "-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{tmp_path / 'in'}: case_0000.nii.gz and case_0001.nii.gz are channels of one "
                                     "case case (nnU-Net naming CASE_XXXX), but the model takes 1 channel(s)")
    # the single file given alone brings its sibling channel along, and is refused the same way
    code, err = predict_cli(capsys, "-i", tmp_path / "in" / "case_0000.nii.gz", "-o", tmp_path / "out", "-m",
                            model_stub)
    assert_one_line_error(code, err, "case_0000.nii.gz and case_0001.nii.gz are channels of one case")


def test_a_third_channel_file_for_a_two_channel_model(tmp_path, plain_plans, stub_factory, capsys, volume_writer):
    model = stub_factory(tmp_path / "Dataset990_Test" / "nnUNetTrainer__nnUNetPlans__2d", plain_plans,
                         channel_names=("T1", "T2"))
    for channel in range(3):
        volume_writer(tmp_path / "in" / f"x_{channel:04d}.nii.gz")
    code, err = predict_cli(capsys, "-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model)
    assert_one_line_error(code, err, "x_0000.nii.gz and x_0002.nii.gz are channels of one case x",
                          "the model takes 2 channel(s) (x_0000 .. x_0001)")


def test_overwrite_refuses_to_leave_another_models_segmentations_beside_its_own(tmp_path, model_stub, capsys,
                                                                                 volume_writer):
    """--overwrite replaces the cases it predicts; one it does not predict, of another or an unknown
    model, would stay in the folder under this model's record."""
    import json

    from pu_nnunet.provenance import MODEL_RECORD_FILE, model_record

    image = volume_writer(tmp_path / "in" / "a_0000.nii.gz")
    out = tmp_path / "out"
    leftover = volume_writer(out / "b.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", out, "-m", model_stub, "--overwrite")
    assert_one_line_error(code, err, f"{leftover}: written by a model this folder has no model_record.json of and not "
                                     "among the inputs, so it would stay beside this model's segmentations")
    other = {**model_record(model_stub, [0], "checkpoint_final.pth"), "trainer": "nnUNetTrainerPURe"}
    (out / MODEL_RECORD_FILE).write_text(json.dumps(other))
    code, err = predict_cli(capsys, "-i", image, "-o", out, "-m", model_stub, "--overwrite")
    assert_one_line_error(code, err, f"{leftover}: written by another model and not among the inputs")
    assert leftover.is_file()
    # without --overwrite as well: the folder would hold two models' segmentations
    code, err = predict_cli(capsys, "-i", image, "-o", out, "-m", model_stub)
    assert_one_line_error(code, err, f"{out / MODEL_RECORD_FILE}: the segmentations in this folder were written by "
                                     "another model (trainer nnUNetTrainerPURe there, nnUNetTrainer now)")
    (out / MODEL_RECORD_FILE).unlink()
    code, err = predict_cli(capsys, "-i", image, "-o", out, "-m", model_stub)
    assert_one_line_error(code, err, f"{leftover}: written by a model this folder has no model_record.json of")
    # the folder's own model: its other cases may stay (the run goes on to load the stub's empty checkpoint)
    (out / MODEL_RECORD_FILE).write_text(json.dumps(model_record(model_stub, [0], "checkpoint_final.pth")))
    code, err = predict_cli(capsys, "-i", image, "-o", out, "-m", model_stub, "--overwrite", "--device", "cpu")
    assert_one_line_error(code, err, "cannot load the model")


@pytest.mark.parametrize("as_folder", [True, False], ids=["folder", "file"])
def test_two_files_for_one_case_are_refused(tmp_path, model_stub, capsys, volume_writer, as_folder):
    """A stale case_0000.nii beside case_0000.nii.gz: SimpleITK, asked for the .nii.gz, would read the
    .nii, so a single file named on the command line is checked against its neighbours too (predict
    refused both already: the two map to one output; this keeps it so)."""
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    volume_writer(tmp_path / "stale.nii", seed=1).rename(tmp_path / "in" / "case_0000.Nii")  # SimpleITK writes .nii only
    code, err = predict_cli(capsys, "-i", tmp_path / "in" if as_folder else image, "-o", tmp_path / "out",
                            "-m", model_stub)
    assert_one_line_error(code, err, "case_0000.nii.gz", "case_0000.Nii")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
