"""The AMOS converter on an AMOS-layout folder built from the real 3 mm CT (../shared/data/real-ct,
one patient, Apache-2.0: see its NOTICE.md), TotalSegmentator's labels mapped to AMOS's 15 organ
ids, then nnU-Net's planning and preprocessing of the converted dataset."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest

from pu_nnunet.datasets.converters.amos import (AMOS_ID_BY_TOTALSEGMENTATOR_NAME, AMOS_LABEL_NAMES,
                                                amos_labels_from_totalsegmentator, convert_amos)

# TotalSegmentator ids of the AMOS organs in the 3 mm CT's segmentation -> AMOS ids: those NOTICE.md
# lists, and duodenum (19), aorta (52) and inferior vena cava (63), which the file holds too; its
# vertebrae, lungs, colon and other classes are no AMOS class
REAL_CT_ORGANS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 7, 7: 10, 8: 11, 9: 12, 19: 13, 52: 8, 63: 9}
VERTEBRA_L2 = 30
DATASET_ID = 218


@pytest.fixture(scope="module")
def totalsegmentator(real_ct):
    names = {int(k): v for k, v in json.loads((real_ct / "totalsegmentator_total_labels.json").read_text()).items()}
    labels = nibabel.load(real_ct / "ct_abdomen_3mm_totalseg.nii.gz")
    return names, labels


def test_the_table_covers_amos_15_organs_once(layouts):
    assert list(AMOS_LABEL_NAMES) == layouts.amos_labels
    assert sorted(AMOS_ID_BY_TOTALSEGMENTATOR_NAME.values()) == list(range(1, 16))


def test_real_totalsegmentator_labels_become_amos_ids(totalsegmentator):
    names, image = totalsegmentator
    original = np.asanyarray(image.dataobj)
    mapped = amos_labels_from_totalsegmentator(original, names)
    assert mapped.dtype == np.uint8 and mapped.shape == original.shape
    assert sorted(np.unique(mapped).tolist()) == [0, *sorted(REAL_CT_ORGANS.values())]
    for ts_id, amos_id in REAL_CT_ORGANS.items():
        assert np.array_equal(mapped == amos_id, original == ts_id), names[ts_id]
    assert (original == VERTEBRA_L2).any() and not mapped[original == VERTEBRA_L2].any()
    with pytest.raises(ValueError, match="lacks .*liver.*: not its 'total' task"):
        amos_labels_from_totalsegmentator(original, {k: v for k, v in names.items() if v != "liver"})


def amos_folder(root: Path, real_ct: Path, totalsegmentator) -> Path:
    """amos22/ with the real CT as training case 1 and again as validation case 2 (AMOS's official
    split needs both parts), its labels in AMOS ids, AMOS's dataset.json labels."""
    names, image = totalsegmentator
    source = root / "amos22"
    mapped = amos_labels_from_totalsegmentator(np.asanyarray(image.dataobj), names)
    for part, number in (("Tr", 1), ("Va", 2)):
        for folder in (f"images{part}", f"labels{part}"):
            (source / folder).mkdir(parents=True)
        shutil.copyfile(real_ct / "ct_abdomen_3mm.nii.gz", source / f"images{part}" / f"amos_{number:04d}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(mapped, image.affine, image.header),
                     source / f"labels{part}" / f"amos_{number:04d}.nii.gz")
    (source / "dataset.json").write_text(json.dumps({"labels": dict(enumerate(AMOS_LABEL_NAMES))}))
    return source


@pytest.mark.slow
def test_real_ct_converts_plans_and_preprocesses(real_ct, totalsegmentator, tmp_path, nnunet_verify):
    source = amos_folder(tmp_path, real_ct, totalsegmentator)
    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    summary = convert_amos(source, DATASET_ID, raw_root=raw)
    assert (summary.num_training, summary.num_test) == (2, 0)
    # nnU-Net's integrity check in this process (its pool as threads: no process importing torch)
    nnunet_verify(summary.dataset_folder)
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed),
               nnUNet_results=str(tmp_path / "results"), nnUNet_def_n_proc="1")
    result = subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                             "-c", "3d_fullres", "-np", "1", "-npfp", "1"], env=env,
                            capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = preprocessed / summary.dataset_folder.name
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    # the real CT's 3 mm grid, and its HU range seen by the fingerprint (int16, padding -1100)
    assert plans["configurations"]["3d_fullres"]["spacing"] == [3.0, 3.0, 3.0]
    fingerprint = json.loads((folder / "dataset_fingerprint.json").read_text())
    intensities = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert -1100 <= intensities["min"] < intensities["median"] < intensities["max"] <= 1207
    assert fingerprint["spacings"] == [[3.0, 3.0, 3.0]] * 2
    stored = sorted(p.name for p in (folder / "nnUNetPlans_3d_fullres").iterdir())
    assert [name for name in stored if name.endswith(".pkl")] == ["amos_0001.pkl", "amos_0002.pkl"]
    import pickle

    with open(folder / "nnUNetPlans_3d_fullres" / "amos_0001.pkl", "rb") as handle:
        properties = pickle.load(handle)
    # foreground sampling locations exist for exactly the organs present, in AMOS ids
    found = sorted(k for k, v in properties["class_locations"].items() if len(v))
    assert found == sorted(REAL_CT_ORGANS.values())
