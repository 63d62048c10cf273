"""The converter registry (pu_nnunet/datasets/converters/registry.py): `pu-nnunet convert` is built
from it, so a dataset of images and masks in two folders is a spec and one entry, with no code of
its own. Here a Kvasir-like dataset (frames/ and labels/, PNG masks, a 0.5 hold-out) is added as a
user would, and goes through the command line."""

import json

import pytest

from pu_nnunet.cli import main
from pu_nnunet.datasets.converters.paired_folders import PairedFolderSpec
from pu_nnunet.datasets.converters.registry import CONVERTERS, paired_folder_converter

ENDOSCOPY = PairedFolderSpec(
    title="Endoscopy-Test", default_name="EndoTest", images_folder="frames", masks_folder="labels",
    image_suffix=".png", mask_format="png", foreground="lesion", validation_fraction=0.5,
    holdout_name="50/50 train/val", description="a Kvasir-like test dataset", reference="tests")


@pytest.fixture
def endoscopy_converter():
    CONVERTERS["endoscopy"] = paired_folder_converter("endoscopy", ENDOSCOPY)
    yield "endoscopy"
    del CONVERTERS["endoscopy"]


def test_a_spec_is_a_converter_on_the_command_line(endoscopy_converter, tmp_path, raw_root, layouts, capsys):
    kvasir_like = layouts.kvasir(tmp_path / "download", count=6)
    (kvasir_like / "images").rename(kvasir_like / "frames")
    labels = kvasir_like / "labels"
    labels.mkdir()
    for seed, mask in enumerate(sorted((kvasir_like / "masks").iterdir())):  # binary PNG masks, as the spec says
        layouts.save(layouts.binary_mask(seed), labels / f"{mask.stem}.png")
    for mask in (kvasir_like / "masks").iterdir():
        mask.unlink()
    (kvasir_like / "masks").rmdir()

    assert main(["convert", "endoscopy", str(kvasir_like), "-d", "12", "--seed", "3"]) == 0
    folder = raw_root / "Dataset012_EndoTest"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "lesion": 1} and meta["numTraining"] == 6
    assert "seeded 50/50 train/val, seed 3" in meta["description"]
    splits = json.loads((folder / "splits_final.json").read_text())
    assert len(splits) == 1 and len(splits[0]["val"]) == 3
    assert "Dataset012_EndoTest" in capsys.readouterr().out


def test_every_registered_converter_is_a_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    listed = capsys.readouterr().out
    for key in CONVERTERS:
        assert key in listed
