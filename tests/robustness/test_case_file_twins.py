"""The robustness sweep reads the images it corrupts itself: two files for one case are refused
there too, instead of corrupting whichever one SimpleITK opens."""

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.robustness.errors import RobustnessError
from pu_nnunet.robustness.sweep import Condition, write_corrupted_inputs
from pu_nnunet.user_files import nifti_twin_problem


def _write(path, value):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 4, 4), value, np.int16)), str(path))
    return path


def test_a_stale_twin_is_refused_before_anything_is_corrupted(tmp_path):
    images = tmp_path / "imagesTs"
    images.mkdir()
    _write(images / "case_0000.nii.gz", 100)
    _write(images / "case_0000.nii", 0)
    with pytest.raises(RobustnessError, match="case_0000.nii.gz: another file of the same case"):
        write_corrupted_inputs(images, tmp_path / "out", Condition("gaussian", 0.1), 0, "CT")


@pytest.mark.parametrize("names, twin", [(("a.nii.gz", "a.nii"), "a.nii"), (("a.nii.gz", "a.NII"), "a.NII"),
                                         (("a.nii", "a.NII.GZ"), "a.NII.GZ"), (("a.nii.gz", "ab.nii"), None),
                                         (("a.nii.gz", "a.nii.gz.bak"), None)])
def test_twins_in_any_spelling_of_the_ending(tmp_path, names, twin):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    problem = nifti_twin_problem(tmp_path / names[0])
    assert (problem is None) if twin is None else (twin in problem)
