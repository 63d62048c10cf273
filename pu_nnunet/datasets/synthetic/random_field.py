"""Smooth random fields: the organ outlines and textures of the synthetic CT, the tissue layers
and inhomogeneity of the synthetic ultrasound."""

from __future__ import annotations

import numpy as np

# floor of the field's SD before normalising: a field flattened to ~0 by heavy smoothing of a
# tiny shape stays ~0 instead of being blown up
MIN_FIELD_SD = 1e-6


def smooth_random_field(rng: np.random.Generator, shape: tuple[int, ...], smoothing) -> np.ndarray:
    """Unit-SD random field, smooth on the scale of ``smoothing`` voxels (one Gaussian sigma, or
    one per axis)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), smoothing)
    return field / max(float(field.std()), MIN_FIELD_SD)
