"""NSD and HD95 against values computed by hand on shapes where they are known exactly.

Two 4x4x4 cubes k voxels apart along one axis (k >= 4, so they do not touch): every surface
(edge) voxel of one cube is nearest to the facing side of the other, so the directed surface
distances of either cube are, per layer across the shift axis, 16 voxels (the face towards the
other cube) at (k-3), 12 (a ring) at (k-2), 12 at (k-1) and 16 (the far face) at k voxel steps,
times the spacing along that axis. Of 56 distances per direction the 95th percentile (linear, as
torch.quantile) falls among the 16 largest: HD95 = k * spacing. NSD at tolerance t counts the distances
<= t: t = (k-2) * spacing gives (16 + 12) / 56 = 1/2.
"""

import numpy as np
import pytest

from pu_nnunet.evaluation import EvaluationError
from pu_nnunet.evaluation.metrics.boundary import (DEFAULT_NSD_TOLERANCE, BoundarySettings, case_boundary,
                                                   parse_tolerances)

SHAPE = (16, 16, 16)
SPACING_ZYX = (2.5, 0.8, 0.9)  # anisotropic, in nnU-Net's (z, y, x) order
CUBE = 4


def cube(corner, shape=SHAPE, label=1, base=None):
    array = np.zeros(shape, np.uint8) if base is None else base.copy()
    array[tuple(slice(c, c + CUBE) for c in corner)] = label
    return array


def score(pred, ref, tolerance=DEFAULT_NSD_TOLERANCE, spacing=SPACING_ZYX, is_2d=False, ignore=None,
          classes=None):
    classes = classes or {"1": (1,)}
    return case_boundary(pred, ref, classes, spacing, is_2d, BoundarySettings({}, tolerance), ignore)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [4, 6])
def test_two_cubes_a_known_distance_apart(axis, shift):
    corner = [2, 2, 2]
    ref = cube(corner)
    corner[axis] += shift
    pred = cube(corner)
    step = SPACING_ZYX[axis]  # the spacing of the shift axis: the spacing order is (z, y, x)
    assert score(pred, ref)["1"]["hd95"] == pytest.approx(shift * step, rel=1e-6)
    for steps, expected in ((shift - 3, 16 / 56), (shift - 2, 28 / 56), (shift - 1, 40 / 56), (shift, 1.0)):
        assert score(pred, ref, tolerance=steps * step)["1"]["nsd"] == pytest.approx(expected, rel=1e-6), steps
    assert score(pred, ref, tolerance=(shift - 3) * step * 0.99)["1"]["nsd"] == 0.0


def test_identical_masks():
    ref = cube((3, 5, 1))
    assert score(ref, ref)["1"] == {"nsd": 1.0, "hd95": 0.0}
    assert score(ref, ref, tolerance=0.0)["1"]["nsd"] == 1.0


def test_empty_conventions():
    ref = cube((3, 5, 1))
    empty = np.zeros(SHAPE, np.uint8)
    assert score(empty, ref)["1"] == {"nsd": 0.0, "hd95": None}  # missed: NSD 0, HD95 undefined
    assert score(ref, empty)["1"] == {"nsd": 0.0, "hd95": None}  # false positive
    assert score(empty, empty)["1"] == {"nsd": None, "hd95": None}  # nothing to score, as Dice


def test_2d_distances_are_in_pixels():
    ref = np.zeros((1, 20, 20), np.uint8)
    ref[0, 2:6, 2:6] = 1
    pred = np.zeros_like(ref)
    pred[0, 2:6, 9:13] = 1  # 7 pixels along x
    # NaturalImage2DIO's spacing (999, 1, 1) or any other: distances count pixels
    assert score(pred, ref, spacing=(999.0, 0.5, 0.5), is_2d=True)["1"]["hd95"] == pytest.approx(7.0)


def test_foreground_is_the_union_and_ignore_voxels_are_dropped():
    ref = cube((2, 2, 2), base=cube((2, 2, 6), label=2))  # two touching cubes: one 4x4x8 box
    pred = ref.copy()
    pred[2:6, 2:6, 10:12] = 2  # label 2 predicted 2 voxels too far along x ...
    ref[2:6, 2:6, 10:12] = 3  # ... where the reference says "ignore"
    classes = {"1": (1,), "2": (2,), "foreground": (1, 2)}
    result = score(pred, ref, classes=classes, ignore=3)
    assert result["foreground"] == {"nsd": 1.0, "hd95": 0.0}
    assert result["2"] == {"nsd": 1.0, "hd95": 0.0}
    unmasked = score(pred, ref, classes=classes)["2"]
    assert unmasked["hd95"] == pytest.approx(2 * SPACING_ZYX[2], rel=1e-6)  # the 2 voxels count without it


def test_tolerance_entries():
    settings = parse_tolerances(["1.5", "2=3", "foreground=0.5"])
    assert (settings.tolerance("1"), settings.tolerance("2"), settings.tolerance("foreground")) == (1.5, 3.0, 0.5)
    assert parse_tolerances(None).tolerance("7") == DEFAULT_NSD_TOLERANCE
    for bad in ("two", "1=-1", "inf"):
        with pytest.raises(EvaluationError, match="--nsd-tolerance"):
            parse_tolerances([bad])
