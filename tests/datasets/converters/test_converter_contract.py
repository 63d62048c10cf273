"""The contract every registered converter keeps, tested over the registry
(pu_nnunet/datasets/converters/registry.py), so a new converter is held to it with no test of its own:

- lossless: the labels written hold every foreground pixel (voxel) of the source masks, no more;
- spellings: an image or mask ending in another spelling (``.JPG``, ``.PNG``) loses no case;
- orphans: a mask whose image is gone is an error naming the mask;
- broken links: a symbolic link to nothing among the images is an error naming it;
- lossy masks: a JPEG mask drawn with 0/1 values (which thresholding would empty) is an error
  naming it, where the converter takes JPEG masks;
- a refused conversion leaves nothing in nnUNet_raw.

A paired-folder converter's source is made from its spec (images in one folder, masks in the other);
the hand-written converters' sources come from tests/datasets/conftest.py's mini layouts. A
registered converter that is neither fails here until its layout is added below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.converters.paired_folders import PairedFolderSpec
from pu_nnunet.datasets.converters.registry import CONVERTERS
from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError

CASES = 5


@dataclass(frozen=True)
class Layout:
    build: Callable[[Path], Path]           # writes a small source under the folder; returns what to convert
    images: Callable[[Path], list[Path]]    # the training images of a built source
    mask_of: Callable[[Path], Path]         # an image's mask (the first, where a case has several)
    foreground: Callable[[Path], int]       # foreground pixels of the source masks of the cases converted
    spellings: bool = True                  # files are found by listing (AMOS's are named by its dataset.json)
    jpeg_masks: bool = True                 # JPEG masks are taken (and thresholded)


def _foreground(paths) -> int:
    return sum(int(np.count_nonzero(np.asarray(Image.open(path)))) for path in paths)


def paired_layout(spec: PairedFolderSpec, layouts) -> Layout:
    def build(root: Path) -> Path:
        for i in range(CASES):
            layouts.save(layouts.photo(i), root / spec.images_folder / f"case{i:03d}{spec.image_suffix}")
            layouts.save(layouts.binary_mask(i), root / spec.masks_folder / f"case{i:03d}.png")  # lossless 0/255
        return root

    images = lambda source: sorted((source / spec.images_folder).iterdir())  # noqa: E731
    mask_of = lambda image: image.parent.parent / spec.masks_folder / f"{image.stem}.png"  # noqa: E731
    return Layout(build, images, mask_of, lambda source: _foreground((source / spec.masks_folder).iterdir()),
                  jpeg_masks=spec.mask_format == "jpeg")


def isic_layout(layouts) -> Layout:
    inputs, truth = "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"
    return Layout(lambda root: layouts.isic(root, {"Training": CASES, "Validation": 0, "Test": 0}),
                  lambda source: sorted((source / inputs).glob("ISIC_*")),
                  lambda image: image.parent.parent / truth / f"{image.stem}_segmentation.png",
                  lambda source: _foreground((source / truth).iterdir()))


def busi_layout(layouts) -> Layout:
    def foreground(source: Path) -> int:  # a case's masks are merged: count their union
        total = 0
        for image in sorted(source.glob("*/* (*).png")):
            masks = [np.asarray(Image.open(m)) > 0 for m in image.parent.glob(f"{image.stem}_mask*")]
            total += int(np.count_nonzero(np.logical_or.reduce(masks)))
        return total

    return Layout(lambda root: layouts.busi(root, {"benign": 3, "malignant": 2, "normal": 2}),
                  lambda source: sorted((source / "benign").glob("benign (*).png"), key=lambda p: p.stem)[:1] +
                  sorted((source / "malignant").glob("malignant ([0-9]).png")),
                  lambda image: image.with_name(f"{image.stem}_mask.png"), foreground)


def amos_layout(layouts) -> Layout:
    import nibabel

    ct_cases = ("amos_0001", "amos_0002", "amos_0004", "amos_0005", "amos_0006")  # the MRI cases are left out

    def foreground(source: Path) -> int:
        labels = [*(source / "labelsTr").iterdir(), *(source / "labelsVa").iterdir()]
        return sum(int(np.count_nonzero(np.asarray(nibabel.load(p).dataobj))) for p in labels
                   if p.name.removesuffix(".nii.gz") in ct_cases)

    return Layout(layouts.amos, lambda source: sorted((source / "imagesTr").glob("amos_000*.nii.gz")),
                  lambda image: image.parent.parent / "labelsTr" / image.name, foreground,
                  spellings=False, jpeg_masks=False)


HAND_WRITTEN = {"isic2018": isic_layout, "busi": busi_layout, "amos": amos_layout}


@pytest.fixture(params=sorted(CONVERTERS))
def converter(request, layouts, raw_root, tmp_path):
    """(convert(source, dataset_id), built source, its Layout) of one registered converter."""
    entry = CONVERTERS[request.param]
    if entry.paired_spec is not None:
        layout = paired_layout(entry.paired_spec, layouts)
    elif entry.key in HAND_WRITTEN:
        layout = HAND_WRITTEN[entry.key](layouts)
    else:
        pytest.fail(f"converter {entry.key!r} has no layout in {Path(__file__).name}: add one so the contract covers it")
    source = layout.build(tmp_path / "source")
    return entry.load(), source, layout


def written_foreground(folder: Path) -> int:
    import nibabel

    total = 0
    for labels in folder.glob("labels*"):
        for path in labels.iterdir():
            array = nibabel.load(path).dataobj if path.name.endswith(".nii.gz") else Image.open(path)
            total += int(np.count_nonzero(np.asarray(array)))
    return total


def only_dataset(raw_root: Path) -> Path:
    folders = list(raw_root.iterdir())
    assert len(folders) == 1, folders
    return folders[0]


def test_labels_hold_every_source_pixel(converter, raw_root):
    convert, source, layout = converter
    convert(source, 501)
    assert written_foreground(only_dataset(raw_root)) == layout.foreground(source) > 0


def test_other_spellings_of_the_endings_lose_no_case(converter, raw_root):
    convert, source, layout = converter
    if not layout.spellings:
        pytest.skip("its files are named by the source's dataset.json, not found by listing")
    clean = convert(source, 502)
    image = layout.images(source)[0]
    mask = layout.mask_of(layout.images(source)[1])
    image.rename(image.with_suffix(image.suffix.upper()))
    mask.rename(mask.with_suffix(mask.suffix.upper()))
    renamed = convert(source, 503)
    assert (renamed.num_training, renamed.num_test) == (clean.num_training, clean.num_test)


def test_a_mask_without_its_image_is_named_and_nothing_is_written(converter, raw_root):
    convert, source, layout = converter
    image = layout.images(source)[1]
    mask = layout.mask_of(image)
    image.unlink()
    with pytest.raises(DatasetError, match="without its image") as error:
        convert(source, 504)
    assert mask.name in str(error.value)
    assert list(raw_root.iterdir()) == []


def test_a_broken_link_among_the_images_is_named_and_nothing_is_written(converter, raw_root, tmp_path):
    convert, source, layout = converter
    image = layout.images(source)[0]
    link = image.with_name(f"linked{''.join(image.suffixes)}")
    link.symlink_to(tmp_path / "gone" / image.name)
    with pytest.raises(SourceLayoutError, match="broken symbolic link") as error:
        convert(source, 505)
    assert link.name in str(error.value)
    assert list(raw_root.iterdir()) == []


def test_a_zero_one_jpeg_mask_is_refused_not_emptied(converter, raw_root, layouts):
    convert, source, layout = converter
    if not layout.jpeg_masks:
        pytest.skip("its masks are exact (NIfTI or PNG-only): no thresholding can empty them")
    mask = layout.mask_of(layout.images(source)[2])
    mask.unlink()
    jpeg = mask.with_suffix(".jpg")
    layouts.save(layouts.binary_mask(2) // 255, jpeg, quality=95)
    with pytest.raises(DatasetError, match="the mask shows an object") as error:
        convert(source, 506)
    assert jpeg.name in str(error.value)
    assert list(raw_root.iterdir()) == []
