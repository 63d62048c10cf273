"""Converters lose no file and no lesion: every spelling of the image endings, orphans named,
masks whose object would vanish refused, EXIF orientation applied to image and mask alike or
refused, broken links named."""

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.converters.amos import convert_amos
from pu_nnunet.datasets.converters.busi import convert_busi
from pu_nnunet.datasets.converters.isic2018 import convert_isic2018
from pu_nnunet.datasets.converters.kvasir import convert_kvasir
from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError

EXIF_ROTATED_90_CW = 6


def rename(path, new_name):
    return path.rename(path.with_name(new_name))


def save_with_orientation(array, path, orientation):
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path, exif=exif)


def test_kvasir_takes_every_spelling_and_names_what_it_skips(tmp_path, raw_root, layouts):
    source = layouts.kvasir(tmp_path / "src", count=5)
    images = sorted((source / "images").iterdir())
    rename(images[0], images[0].stem + ".JPG")
    rename(images[1], images[1].stem + ".jpeg")
    Image.open(images[2]).save(source / "images" / f"{images[2].stem}.png")  # re-saved as PNG
    images[2].unlink()
    masks = sorted((source / "masks").iterdir())
    rename(masks[3], masks[3].stem + ".JPEG")
    (source / "images" / "notes.txt").write_text("downloaded 2024")
    (source / "images" / "._cju0004kvasir004.jpg").write_bytes(b"macOS resource fork")
    summary = convert_kvasir(source, 5)
    assert summary.num_training == 5  # no pair lost to a spelling
    text = summary.format()
    assert "skipped 2 file(s): " in text and "notes.txt" in text and "._cju0004kvasir004.jpg" in text


def test_kvasir_orphan_mask_and_broken_link_are_named(tmp_path, raw_root, layouts):
    source = layouts.kvasir(tmp_path / "src", count=4)
    (source / "images" / "cju0003kvasir003.jpg").unlink()
    with pytest.raises(DatasetError) as error:
        convert_kvasir(source, 5)
    assert "cju0003kvasir003.jpg: mask without its image" in str(error.value)
    summary = convert_kvasir(source, 5, skip_bad=True)
    assert summary.num_training == 3 and "mask without its image" in summary.format()
    (source / "images" / "cju0009kvasir009.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(SourceLayoutError, match="cju0009kvasir009.jpg: broken symbolic link"):
        convert_kvasir(source, 6)


@pytest.mark.parametrize("mask, found", [
    ("zero_one", "1 x"),       # 0/1 values: thresholding at 128 would leave nothing
    ("low", "60 x"),           # a faint mask
    ("red", "[255, 0, 0] x"),  # a colour mask: luminance 76 is below the threshold
])
def test_kvasir_mask_that_would_become_empty_is_an_error(tmp_path, raw_root, layouts, mask, found):
    source = layouts.kvasir(tmp_path / "src", count=3)
    small = layouts.binary_mask(1) // 255
    small[:, 12:] = 0  # a small object: under 5 % of ambiguous pixels would pass the binary check
    array = {"zero_one": small, "low": small * 60,
             "red": np.stack([small * 255, np.zeros_like(small), np.zeros_like(small)], -1)}[mask]
    target = source / "masks" / "cju0001kvasir001.jpg"
    target.unlink()
    layouts.save(array.astype(np.uint8), target.with_suffix(".png"))  # lossless, so the values stay as written
    with pytest.raises(DatasetError) as error:
        convert_kvasir(source, 5)
    message = str(error.value)
    assert "cju0001kvasir001.png: the mask shows an object of" in message and "keeps 0" in message
    assert found in message


def test_isic_mixed_endings_jpeg_masks_and_orphans(tmp_path, raw_root, layouts):
    source = layouts.isic(tmp_path / "src", {"Training": 4, "Validation": 0, "Test": 0})
    inputs, truth = source / "ISIC2018_Task1-2_Training_Input", source / "ISIC2018_Task1_Training_GroundTruth"
    rename(inputs / "ISIC_0000000.jpg", "ISIC_0000000.JPG")
    Image.open(truth / "ISIC_0000001_segmentation.png").save(truth / "ISIC_0000001_segmentation.jpg", quality=95)
    (truth / "ISIC_0000001_segmentation.png").unlink()
    summary = convert_isic2018(source, 7)
    assert summary.num_training == 4
    label = np.asarray(Image.open(raw_root / "Dataset007_ISIC2018" / "labelsTr" / "ISIC_0000001.png"))
    assert np.array_equal(label, layouts.binary_mask(1) // 255)  # the JPEG mask thresholded, not dropped
    assert "skipped 2 file(s)" in summary.format() and "LICENSE.txt" in summary.format()
    (inputs / "ISIC_0000003.jpg").unlink()
    with pytest.raises(DatasetError, match="ISIC_0000003_segmentation.png: mask without its image"):
        convert_isic2018(source, 8)


def test_isic_zero_one_jpeg_mask_is_an_error(tmp_path, raw_root, layouts):
    source = layouts.isic(tmp_path / "src", {"Training": 3, "Validation": 0, "Test": 0})
    truth = source / "ISIC2018_Task1_Training_GroundTruth"
    (truth / "ISIC_0000002_segmentation.png").unlink()
    layouts.save(layouts.binary_mask(2) // 255, truth / "ISIC_0000002_segmentation.jpg", quality=95)
    with pytest.raises(DatasetError, match=r"ISIC_0000002_segmentation.jpg: the mask shows an object of \d+ pixels "
                                           r"but the converted label keeps 0"):
        convert_isic2018(source, 7)


def test_exif_orientation_is_applied_to_image_and_mask_alike_or_refused(tmp_path, raw_root, layouts):
    source = layouts.isic(tmp_path / "src", {"Training": 3, "Validation": 0, "Test": 0})
    inputs, truth = source / "ISIC2018_Task1-2_Training_Input", source / "ISIC2018_Task1_Training_GroundTruth"
    photo, mask = layouts.photo(0), layouts.binary_mask(0)
    save_with_orientation(photo, inputs / "ISIC_0000000.jpg", EXIF_ROTATED_90_CW)
    save_with_orientation(mask, truth / "ISIC_0000000_segmentation.png", EXIF_ROTATED_90_CW)
    summary = convert_isic2018(source, 7)
    folder = raw_root / "Dataset007_ISIC2018"
    # both turned upright: 90 degrees clockwise, so height and width swap and stay paired
    label = np.asarray(Image.open(folder / "labelsTr" / "ISIC_0000000.png"))
    assert np.array_equal(label, np.rot90(mask // 255, k=-1))
    assert np.asarray(Image.open(folder / "imagesTr" / "ISIC_0000000_0000.png")).shape[:2] == label.shape
    assert "1 image(s) turned upright by their EXIF orientation" in summary.format()
    # the mask without the tag: which way it was drawn is unknown
    layouts.save(mask, truth / "ISIC_0000000_segmentation.png")
    with pytest.raises(DatasetError, match=r"ISIC_0000000_segmentation.png: EXIF orientation 1 \(upright\) differs "
                                           r"from 6 \(rotated 90 degrees clockwise\) of its image"):
        convert_isic2018(source, 8)


def test_busi_accepts_other_spellings_and_jpeg_masks(tmp_path, raw_root, layouts):
    source = layouts.busi(tmp_path / "src", {"benign": 3, "malignant": 2, "normal": 2})
    rename(source / "benign" / "benign (2).png", "benign (2).PNG")
    mask = source / "malignant" / "malignant (2)_mask.png"
    Image.open(mask).save(mask.with_suffix(".jpg"), quality=95)
    mask.unlink()
    summary = convert_busi(source, 9)
    assert summary.num_training + summary.num_test == 7
    # a 0/1 JPEG mask would become an empty label
    layouts.save(layouts.binary_mask(3) // 255, source / "benign" / "benign (3)_mask.png")
    (source / "benign" / "benign (3)_mask.png").rename(source / "benign" / "benign (3)_mask.jpg")
    with pytest.raises(DatasetError, match=r"benign \(3\)_mask.jpg: the mask shows an object"):
        convert_busi(source, 10)


def test_amos_orphan_labels_and_labels_va_without_images_va(tmp_path, raw_root, layouts):
    source = layouts.amos(tmp_path / "amos22")
    (source / "imagesTr" / "amos_0002.nii.gz").unlink()
    with pytest.raises(DatasetError, match="labelsTr/amos_0002.nii.gz: label without its image"):
        convert_amos(source, 11)
    summary = convert_amos(source, 11, skip_bad=True)
    assert "label without its image" in summary.format()
    for entry in (source / "imagesVa").iterdir():
        entry.unlink()
    (source / "imagesVa").rmdir()
    with pytest.raises(SourceLayoutError, match="imagesVa: not found, but labelsVa is there"):
        convert_amos(source, 12)


def test_amos_refuses_ambiguous_geometry_and_broken_links(tmp_path, raw_root, layouts):
    import nibabel

    source = layouts.amos(tmp_path / "amos22")
    path = source / "imagesTr" / "amos_0004.nii.gz"
    image = nibabel.load(path)
    shifted = image.affine.copy()
    shifted[2, 3] += 7.5  # the qform puts the scan 7.5 mm higher than the sform
    image.set_qform(shifted, code=1)
    nibabel.save(image, path)
    with pytest.raises(DatasetError, match=r"amos_0004.nii.gz: sform \(code \d\) and qform \(code 1\) disagree: the "
                                           r"same voxel lies up to 7.5 mm apart"):
        convert_amos(source, 11)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.nii.gz")
    with pytest.raises(SourceLayoutError, match="amos_0004.nii.gz: broken symbolic link"):
        convert_amos(source, 11)
