"""evaluate refuses what it cannot read one way only: a prediction or reference whose sform and
qform disagree, and a broken symbolic link in either folder (a listing of files would drop the
case)."""


import nibabel
import numpy as np
import pytest

from pu_nnunet.cli import main


def evaluate_cli(folders, capsys):
    code = main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(folders / "out"),
                 "--dataset-json", str(folders / "dataset.json"), "--device", "cpu"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("role", ["pred", "ref"])
def test_disagreeing_sform_and_qform_are_refused(folders, capsys, role):
    path = folders / role / "overlap.nii.gz"
    image = nibabel.load(path)
    image = nibabel.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header)
    moved = image.affine.copy()
    moved[1, 3] -= 2.5
    image.set_qform(moved, code=1)
    image.set_sform(image.affine, code=1)
    nibabel.save(image, path)
    code, err = evaluate_cli(folders, capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"pu-nnunet evaluate: error: {path}: sform (code 1) and qform (code 1) disagree: the same "
                          "voxel lies up to 2.5 mm apart"), err
    assert not (folders / "out").exists()


@pytest.mark.parametrize("role", ["pred", "ref"])
def test_a_broken_link_among_the_files_is_named(folders, capsys, role):
    link = folders / role / "zz_case.nii.gz"
    link.symlink_to(folders / "deleted.nii.gz")
    code, err = evaluate_cli(folders, capsys)
    assert code == 1 and err == (f"pu-nnunet evaluate: error: {link}: broken symbolic link (its target "
                                 f"{folders / 'deleted.nii.gz'} does not exist); restore the file or remove the link\n")


@pytest.mark.parametrize("stale", ["overlap.nii", "overlap.NII"])
@pytest.mark.parametrize("role", ["pred", "ref"])
def test_two_files_for_one_case_are_refused(folders, capsys, role, stale):
    """A stale case.nii beside case.nii.gz: asked for the .nii.gz, SimpleITK opens the .nii, so the
    case would be scored from one file and hashed from the other (issue 30, class 1)."""
    import SimpleITK as sitk

    data = np.zeros(sitk.GetArrayFromImage(sitk.ReadImage(str(folders / role / "overlap.nii.gz"))).shape, np.uint8)
    # SimpleITK writes only lower-case endings: the stale file is renamed into its spelling
    sitk.WriteImage(sitk.GetImageFromArray(data), str(folders / "stale.nii"))
    (folders / "stale.nii").rename(folders / role / stale)
    code, err = evaluate_cli(folders, capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert "overlap.nii.gz" in err and stale in err and "same case" in err
    assert not (folders / "out" / "metrics.json").exists()
