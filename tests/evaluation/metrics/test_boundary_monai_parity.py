"""NSD and HD95 equal MONAI's (compute_surface_dice, compute_hausdorff_distance with percentile 95,
use_subvoxels False) on random shapes: boundary.py computes them itself by MONAI's definitions (see
its docstring), and this is the check that the definitions are the same.

The masks are smoothed noise thresholded, so they have holes, several components and curved
surfaces, some of them touching the array's border (where the erosion counts the outside empty);
3D cases use anisotropic spacing, 2D cases pixels. MONAI scores the whole arrays, boundary.py its
bounding-box crops. Slow: importing MONAI costs a worker 4-6 s.
"""

import warnings

import numpy as np
import pytest

from pu_nnunet.evaluation.metrics.boundary import BoundarySettings, case_boundary

pytestmark = pytest.mark.slow

SPACING_ZYX = (2.5, 0.8, 0.9)
TOLERANCES = (0.0, 0.8, 1.0, 2.0, 3.3)


def blobs(rng, shape, threshold):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(rng.standard_normal(shape), sigma=2.0) > threshold


def monai_scores(pred, ref, spacing, tolerance):
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    as_batch = lambda mask: torch.from_numpy(np.ascontiguousarray(mask))[None, None]  # noqa: E731
    with warnings.catch_warnings():  # MONAI's own deprecation warnings
        warnings.simplefilter("ignore")
        nsd = compute_surface_dice(as_batch(pred), as_batch(ref), [tolerance], include_background=True,
                                   spacing=list(spacing))
        hd95 = compute_hausdorff_distance(as_batch(pred), as_batch(ref), include_background=True, percentile=95,
                                          spacing=list(spacing))
    return float(nsd[0, 0]), float(hd95[0, 0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dims", ["2d", "3d"])
def test_nsd_and_hd95_equal_monais(dims, seed):
    rng = np.random.default_rng(seed)
    shape = (1, 48, 40) if dims == "2d" else (12, 30, 26)
    ref = blobs(rng, shape, 0.1)
    pred = blobs(rng, shape, 0.1) | ref & blobs(rng, shape, -0.2)  # overlapping, not equal
    assert ref.any() and pred.any() and (ref != pred).any()
    for tolerance in TOLERANCES:
        ours = case_boundary(pred.astype(np.uint8), ref.astype(np.uint8), {"1": (1,)}, SPACING_ZYX, dims == "2d",
                             BoundarySettings({}, tolerance))["1"]
        # 2D cases are scored in pixels on the (X, Y) slice, as boundary.py does
        spacing, a, b = ((1.0, 1.0), pred[0], ref[0]) if dims == "2d" else (SPACING_ZYX, pred, ref)
        nsd, hd95 = monai_scores(a, b, spacing, tolerance)
        assert ours["nsd"] == pytest.approx(nsd, abs=1e-6), tolerance
        assert ours["hd95"] == pytest.approx(hd95, rel=1e-5), tolerance
