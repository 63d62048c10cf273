"""AMOS 2022: CT only, MRI counted, files copied unchanged, official split in the split file,
validation as test set on request."""

import json

import nibabel
import numpy as np
import pytest

from pu_nnunet.datasets.converters.amos import convert_amos
from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError


def test_default_trains_on_training_and_validation(tmp_path, raw_root, layouts, nnunet_verify):
    source = layouts.amos(tmp_path / "amos22")
    summary = convert_amos(source, 218)
    folder = raw_root / "Dataset218_AMOS2022CT"
    nnunet_verify(folder)
    assert (summary.num_training, summary.num_test) == (5, 1)
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"amos_{n:04d}_0000.nii.gz" for n in (1, 2, 4, 5, 6)]
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["amos_0007_0000.nii.gz"]
    assert not (folder / "labelsTs").exists()
    assert "MRI cases left out: training 1, validation 1, test 1" in summary.format()
    meta = json.loads((folder / "dataset.json").read_text())
    assert list(meta["labels"]) == layouts.amos_labels and meta["labels"]["prostate/uterus"] == 15
    assert meta["overwrite_image_reader_writer"] == "NibabelIOWithReorient" and meta["numTraining"] == 5
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == [{"train": ["amos_0001", "amos_0002", "amos_0004"], "val": ["amos_0005", "amos_0006"]}]
    # geometry kept: the files are the originals, byte for byte
    original = (source / "labelsVa" / "amos_0005.nii.gz").read_bytes()
    assert (folder / "labelsTr" / "amos_0005.nii.gz").read_bytes() == original
    copied = nibabel.load(folder / "imagesTr" / "amos_0004_0000.nii.gz")
    assert np.allclose(copied.affine, layouts.amos_affine) and copied.shape == layouts.amos_shape


def test_validation_as_test_set(tmp_path, raw_root, layouts, nnunet_verify):
    source = layouts.amos(tmp_path / "amos22")
    summary = convert_amos(source, 219, val_as_test=True)
    folder = summary.dataset_folder
    nnunet_verify(folder)
    assert (summary.num_training, summary.num_test) == (3, 2)
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["amos_0005.nii.gz", "amos_0006.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["amos_0005_0000.nii.gz", "amos_0006_0000.nii.gz"]
    splits = json.loads((folder / "splits_final.json").read_text())
    assert len(splits) == 3 and sorted(sum((s["val"] for s in splits), [])) == ["amos_0001", "amos_0002", "amos_0004"]


def test_bad_input(tmp_path, raw_root, layouts):
    with pytest.raises(SourceLayoutError, match="dataset.json: not found"):
        convert_amos(tmp_path, 218)
    source = layouts.amos(tmp_path / "amos22")
    layouts.corrupt(source / "imagesTr" / "amos_0002.nii.gz")
    bad_values = np.full(layouts.amos_shape, 20, np.uint8)
    layouts.write_nifti(source / "labelsTr" / "amos_0004.nii.gz", bad_values)
    layouts.write_nifti(source / "labelsVa" / "amos_0005.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(DatasetError) as error:
        convert_amos(source, 218)
    message = str(error.value)
    assert "imagesTr/amos_0002.nii.gz: not a readable NIfTI file" in message
    assert "labelsTr/amos_0004.nii.gz: unexpected label values [20]" in message
    assert "labelsVa/amos_0005.nii.gz: label shape (3, 3, 3) differs from image shape (12, 10, 6)" in message
    summary = convert_amos(source, 218, skip_bad=True)
    assert summary.num_training == 2 and len(summary.skipped) == 3
    (source / "dataset.json").write_text("{}")
    with pytest.raises(SourceLayoutError, match="dataset.json: cannot read the AMOS labels"):
        convert_amos(source, 219)
