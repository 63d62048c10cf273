"""The smooth random field both synthetic generators draw shapes and textures from."""

import numpy as np
import pytest

from pu_nnunet.datasets.synthetic.random_field import smooth_random_field


@pytest.mark.parametrize("shape, smoothing", [((64, 64), 4.0), ((8, 32, 32), (1.0, 4.0, 4.0))])
def test_unit_sd_smooth_and_seeded(shape, smoothing):
    field = smooth_random_field(np.random.default_rng(3), shape, smoothing)
    assert field.shape == shape and field.std() == pytest.approx(1.0)
    again = smooth_random_field(np.random.default_rng(3), shape, smoothing)
    np.testing.assert_array_equal(field, again)
    # neighbours along the last axis move together (white noise: correlation ~0)
    neighbours = np.corrcoef(field[..., :-1].ravel(), field[..., 1:].ravel())[0, 1]
    assert neighbours > 0.9
