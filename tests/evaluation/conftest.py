"""Small synthetic prediction/reference folders for the evaluation tests.

3D cases are NIfTI files written with SimpleITK (with spacing), 2D cases PNG files written with
PIL. Arrays are given in nnU-Net's axis order: (z, y, x) for 3D, (y, x) for 2D. The tests reach
these helpers through the ``synth`` fixture: under pytest's importlib import mode a test module
cannot import a sibling module.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# SimpleITK spacing order (x, y, z) in mm; one voxel is 0.8 * 0.9 * 2.5 = 1.8 mm^3 = 0.0018 ml.
SPACING_XYZ = (0.8, 0.9, 2.5)
VOXEL_ML = 0.8 * 0.9 * 2.5 / 1000.0
SHAPE_3D = (6, 10, 12)
SHAPE_2D = (20, 24)


def write_nifti(path: Path, array: np.ndarray, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def write_cases(folder: Path, cases: dict[str, np.ndarray], ending: str) -> Path:
    for case, array in cases.items():
        (write_png if ending == ".png" else write_nifti)(folder / f"{case}{ending}", array)
    return folder


def box(shape, *slices, label: int = 1, base: np.ndarray | None = None) -> np.ndarray:
    array = np.zeros(shape, np.uint8) if base is None else base.copy()
    array[tuple(slices)] = label
    return array


def hand_checked_3d() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(references, predictions) whose numbers the tests compute by hand.

    overlap: label 1 reference 2x3x4 = 24 voxels, prediction 1x3x6 = 18 voxels, 12 shared
             (TP 12, FP 6, FN 12: Dice 24/42, IoU 12/30); label 2 reference 8 voxels, predicted
             exactly.
    fp_only: reference empty; prediction has 3 voxels of label 2 (a false positive).
    normal:  reference and prediction empty (Dice undefined, no false positive).
    missed:  reference has 10 voxels of label 1; prediction empty (Dice 0, a false negative).
    """
    s = SHAPE_3D
    refs = {
        "overlap": box(s, slice(1, 3), slice(2, 5), slice(2, 6), base=box(s, slice(4, 6), slice(6, 8), slice(8, 10),
                                                                          label=2)),
        "fp_only": np.zeros(s, np.uint8),
        "normal": np.zeros(s, np.uint8),
        "missed": box(s, slice(0, 1), slice(0, 2), slice(0, 5)),
    }
    preds = {
        "overlap": box(s, slice(2, 3), slice(2, 5), slice(2, 8), base=box(s, slice(4, 6), slice(6, 8), slice(8, 10),
                                                                           label=2)),
        "fp_only": box(s, slice(3, 4), slice(0, 1), slice(0, 3), label=2),
        "normal": np.zeros(s, np.uint8),
        "missed": np.zeros(s, np.uint8),
    }
    return refs, preds


def random_pairs(shape, n_cases: int, n_labels: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random blocky label maps (a few boxes per case) and noisy predictions of them."""
    rng = np.random.default_rng(seed)
    refs, preds = {}, {}
    for index in range(n_cases):
        ref = np.zeros(shape, np.uint8)
        for label in range(1, n_labels + 1):
            if rng.random() < 0.25:
                continue  # some labels absent from some cases
            corner = [rng.integers(0, d - 2) for d in shape]
            size = [rng.integers(1, max(2, d // 2)) for d in shape]
            ref[tuple(slice(c, c + w) for c, w in zip(corner, size))] = label
        pred = ref.copy()
        flip = rng.random(shape) < 0.08
        pred[flip] = rng.integers(0, n_labels + 1, size=int(flip.sum()))
        refs[f"case_{index:02d}"], preds[f"case_{index:02d}"] = ref, pred
    return refs, preds


def write_meta(path: Path, classes: dict[str, str]) -> Path:
    path.write_text(json.dumps({case: {"class": name, "split": "test", "source": "synthetic"}
                                for case, name in classes.items()}))
    return path


# a plot must hold coloured marks (curves, points, contours), not only black axes and text: at
# least this many pixels (the plots of these tests have 185 to 1500 or more, empty axes 0)
MIN_COLOURED_PIXELS = 100
# chroma (max - min of R, G, B) above which a pixel counts as coloured
COLOURED_CHROMA = 40


def assert_real_plot(path: Path, min_width: int = 300, min_height: int = 150) -> None:
    """The PNG at ``path`` is a real plot: at least min_width x min_height pixels, not uniform,
    with coloured marks drawn."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    assert width >= min_width and height >= min_height, f"{path.name}: {width}x{height} pixels"
    assert rgb.std() > 0, f"{path.name} is blank"
    coloured = int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > COLOURED_CHROMA).sum())
    assert coloured >= MIN_COLOURED_PIXELS, f"{path.name}: only {coloured} coloured pixels (empty axes?)"


@pytest.fixture(scope="session")
def check_plot():
    """``assert_real_plot`` for the tests (they cannot import this module, see above)."""
    return assert_real_plot


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    """The helpers and constants of this module, for the tests."""
    return SimpleNamespace(SPACING_XYZ=SPACING_XYZ, VOXEL_ML=VOXEL_ML, SHAPE_3D=SHAPE_3D, SHAPE_2D=SHAPE_2D,
                           write_nifti=write_nifti, write_png=write_png, write_cases=write_cases, box=box,
                           hand_checked_3d=hand_checked_3d, random_pairs=random_pairs, write_meta=write_meta)


@pytest.fixture
def folders(tmp_path, synth):
    """The hand-checked 3d cases as prediction and reference folders, with a dataset.json (a test
    module may define its own ``folders``, which then takes precedence)."""
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "lesion": 2},
                                                       "file_ending": ".nii.gz"}))
    return tmp_path
