"""Damaged or contradictory sources and interrupted runs: converters and generators refuse them
with the file named, and never leave a half-written dataset (or its temporary folder) behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pu_nnunet.datasets.converters.amos import convert_amos
from pu_nnunet.datasets.converters.busi import convert_busi
from pu_nnunet.datasets.errors import BadCaseError, DatasetError, SourceLayoutError
from pu_nnunet.datasets.shared.raw_folder import atomic_dataset_folder
from pu_nnunet.datasets.shared.splits import install_splits
from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

PU_NNUNET = str(Path(sys.executable).parent / "pu-nnunet")


def test_same_case_id_in_training_and_validation_is_refused(tmp_path, raw_root, layouts):
    source = layouts.amos(tmp_path / "amos22")
    for folder in ("imagesVa", "labelsVa"):
        shutil.copy(source / folder.replace("Va", "Tr") / "amos_0002.nii.gz", source / folder / "amos_0002.nii.gz")
    with pytest.raises(SourceLayoutError) as error:
        convert_amos(source, 218)
    assert str(error.value).startswith(f"{source / 'imagesTr' / 'amos_0002.nii.gz'} and "
                                       f"{source / 'imagesVa' / 'amos_0002.nii.gz'} both become case amos_0002")
    assert list(raw_root.iterdir()) == []


def test_two_busi_names_for_one_case_are_refused(tmp_path, raw_root, layouts):
    source = layouts.busi(tmp_path / "busi", {"benign": 3, "malignant": 2, "normal": 2})
    shutil.copy(source / "benign" / "benign (1).png", source / "benign" / "benign (01).png")
    with pytest.raises(SourceLayoutError, match=r"benign \(01\)\.png and .*benign \(1\)\.png both become case "
                                                r"benign_001"):
        convert_busi(source, 5)


def test_a_mask_stored_as_0_1_where_the_dataset_uses_0_255(tmp_path, raw_root, layouts):
    source = layouts.busi(tmp_path / "busi", {"benign": 3, "malignant": 2, "normal": 2})
    mask = source / "malignant" / "malignant (2)_mask.png"
    layouts.save(layouts.binary_mask(2, value=1), mask)
    with pytest.raises(DatasetError) as error:
        convert_busi(source, 5)
    assert f"{mask}: mask holds 0 and 1, but this dataset's masks mark the object with 255" in str(error.value)


def test_truncated_nifti_and_nan_voxels_in_a_source(tmp_path, raw_root, layouts):
    """nibabel and SimpleITK read a gzip cut short without complaint (zeros for the rest)."""
    source = layouts.amos(tmp_path / "amos22")
    image = source / "imagesTr" / "amos_0001.nii.gz"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])
    layouts.write_nifti(source / "imagesTr" / "amos_0002.nii.gz",
                        np.where(np.arange(np.prod(layouts.amos_shape)).reshape(layouts.amos_shape) == 7, np.nan,
                                 1.0).astype(np.float32))
    with pytest.raises(DatasetError) as error:
        convert_amos(source, 218)
    message = str(error.value)
    assert f"{image}: truncated: the gzip stream ends before its end marker" in message
    assert f"{source / 'imagesTr' / 'amos_0002.nii.gz'}: 1 voxel(s) are NaN or infinite" in message


@pytest.mark.parametrize("spacing", [(float("nan"), 1.0, 1.0), (3.0, float("inf"), 1.0), (3.0, 1.0, 0.0)])
def test_non_finite_spacing_is_refused(tmp_path, spacing):
    with pytest.raises(DatasetError, match=r"spacing must be three positive sizes in mm \(z, y, x\), got "
                                           + str(spacing).replace("(", r"\(").replace(")", r"\)")):
        generate_synthetic_ct(tmp_path, 5, num_cases=3, num_test=1, shape=(4, 8, 8), spacing=spacing)
    assert list(tmp_path.iterdir()) == []


def test_source_inside_the_target_is_refused(tmp_path, raw_root, layouts):
    target = raw_root / "Dataset005_BUSI"
    source = layouts.busi(target / "download", {"benign": 3, "malignant": 2, "normal": 2})
    with pytest.raises(DatasetError, match="the source folder lies inside the target"):
        convert_busi(source, 5, overwrite=True)
    assert (source / "benign" / "benign (1).png").is_file()


@pytest.mark.parametrize("content, problem", [
    ("[]", "the split file holds no fold"),
    ('{"train": []}', "split file must hold a list"),
    ('[{"train": ["c1", "c2"], "val": ["c2"]}]', "fold 0 has 1 case(s) in both train and val, e.g. c2"),
    ('[{"train": ["c1"], "val": []}]', "fold 0 has no validation cases"),
    ('[{"train": ["c1"], "val": ', "split file is not valid JSON"),
])
def test_install_splits_checks_the_split_file(tmp_path, content, problem):
    raw = tmp_path / "raw" / "Dataset007_X"
    (raw / "labelsTr").mkdir(parents=True)
    for case in ("c1", "c2"):
        (raw / "labelsTr" / f"{case}.png").write_bytes(b"")
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".png"}))
    (raw / "splits_final.json").write_text(content)
    (tmp_path / "pre" / "Dataset007_X").mkdir(parents=True)
    with pytest.raises(DatasetError) as error:
        install_splits(7, tmp_path / "raw", tmp_path / "pre")
    assert str(error.value).startswith(f"{raw / 'splits_final.json'}: ") and problem in str(error.value)
    assert not (tmp_path / "pre" / "Dataset007_X" / "splits_final.json").exists()


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_a_stale_partial_folder_from_a_killed_run_is_removed_with_a_warning(tmp_path):
    stale = tmp_path / f".Dataset004_X.partial-{_dead_pid()}-0123abcd"
    (stale / "imagesTr").mkdir(parents=True)
    running = tmp_path / f".Dataset006_Y.partial-{os.getpid()}-0123abcd"  # a live run's: left alone
    running.mkdir()
    with pytest.warns(UserWarning, match=f"{stale}: removed a temporary folder left behind by an earlier run"):
        with atomic_dataset_folder(tmp_path, 5, "Z") as work:
            (work / "dataset.json").write_text("{}")
    assert not stale.exists() and running.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "Dataset005_Z"]


def test_sigterm_mid_run_cleans_up_like_ctrl_c(tmp_path):
    """A scheduler's time limit or ``kill``: the hidden work folder goes, no dataset appears, one
    line on stderr, exit 143; an existing dataset of the same name stays as it was."""
    raw = tmp_path / "raw"
    env = dict(os.environ, nnUNet_raw=str(raw))
    command = [PU_NNUNET, "synth", "ct", "-d", "9", "--cases", "200", "--test-cases", "1", "--size", "8", "48", "48"]
    (raw / "Dataset009_SynthCT").mkdir(parents=True)
    (raw / "Dataset009_SynthCT" / "earlier.txt").write_text("an earlier version")
    proc = subprocess.Popen(command + ["--overwrite"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(raw.glob(".Dataset009_SynthCT.partial-*/imagesTr/*.nii.gz")):
            assert proc.poll() is None and time.monotonic() < deadline, "no partial folder appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert err == "pu-nnunet synth: interrupted (SIGTERM); partial output was removed\n"
    assert [p.name for p in raw.iterdir()] == ["Dataset009_SynthCT"]
    assert [p.name for p in (raw / "Dataset009_SynthCT").iterdir()] == ["earlier.txt"]


def test_bad_case_errors_name_the_file_and_pickle(tmp_path):
    import pickle

    error = BadCaseError(tmp_path / "a.png", "truncated")
    assert str(pickle.loads(pickle.dumps(error))) == f"{tmp_path / 'a.png'}: truncated"
