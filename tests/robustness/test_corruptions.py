"""Each corruption is deterministic for a seed and has the strength it is given."""

import numpy as np
import pytest

from pu_nnunet.robustness import CORRUPTIONS, DEFAULT_STRENGTHS, corrupt, intensity_model

CT, INTENSITY = intensity_model("CT"), intensity_model("US")


def ramp_image(shape=(2, 64, 64)):
    return np.broadcast_to(np.linspace(10.0, 200.0, shape[-1], dtype=np.float32), shape).copy()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_same_seed_same_image_other_seed_other_noise(name):
    image, strength = ramp_image(), DEFAULT_STRENGTHS[name][1]
    first = corrupt(image, name, strength, seed=3, case="case_1")
    assert first.shape == image.shape and first.dtype == np.float32
    assert np.array_equal(first, corrupt(image, name, strength, seed=3, case="case_1"))
    assert not np.array_equal(first, image)
    if name in ("poisson", "gaussian", "bias"):  # the random ones: seed and case change the draw
        assert not np.array_equal(first, corrupt(image, name, strength, seed=4, case="case_1"))
        assert not np.array_equal(first, corrupt(image, name, strength, seed=3, case="case_2"))


@pytest.mark.parametrize("photons", [10.0, 100.0, 1000.0])
def test_poisson_on_ct_water_has_the_photon_counts_variance(photons):
    # water (0 HU) holds `photons` counts: mean kept, sd = 1000 HU / sqrt(photons)
    noisy = corrupt(np.zeros((4, 128, 128), np.float32), "poisson", photons, seed=0, case="c", model=CT)
    assert abs(noisy.mean()) < 3 * 1000 / np.sqrt(photons * noisy.size)
    assert noisy.std() == pytest.approx(1000 / np.sqrt(photons), rel=0.03)
    # air has no attenuation, hence no counts and no noise
    air = corrupt(np.full((8, 8), -1000.0, np.float32), "poisson", photons, seed=0, case="c", model=CT)
    assert np.array_equal(air, np.full((8, 8), -1000.0, np.float32))


def test_poisson_on_intensities_counts_photons_at_the_case_maximum():
    image = np.full((256, 256), 50.0, np.float32)
    image[0, 0] = 200.0  # the case maximum: the reference that holds `photons` counts
    noisy = corrupt(image, "poisson", 100.0, seed=1, case="c", model=INTENSITY)
    counts = noisy[1:] * 100.0 / 200.0  # photons at the 50-pixels: 25 expected, variance 25
    assert counts.mean() == pytest.approx(25.0, rel=0.01)
    assert counts.var() == pytest.approx(25.0, rel=0.05)
    assert np.allclose(counts, np.round(counts), atol=1e-4)  # whole photon counts


def test_gaussian_sd_is_the_fraction_of_the_intensity_range():
    image = ramp_image((4, 128, 128))
    low, high = np.percentile(image, (0.5, 99.5))
    noise = corrupt(image, "gaussian", 0.1, seed=0, case="c") - image
    assert noise.std() == pytest.approx(0.1 * (high - low), rel=0.02)
    assert abs(noise.mean()) < 0.02 * (high - low)


def test_bias_field_is_smooth_centred_and_of_the_given_log_sd():
    image = ramp_image((3, 96, 96))
    log_field = np.log(corrupt(image, "bias", 0.3, seed=0, case="c") / image)
    assert log_field.std() == pytest.approx(0.3, rel=1e-3)
    assert abs(log_field.mean()) < 1e-4
    assert np.allclose(log_field[0], log_field[2], atol=1e-5)  # one field for every slice
    assert np.abs(np.diff(log_field[0], axis=-1)).max() < 0.1  # slowly varying


def test_gamma_is_the_power_of_the_rescaled_intensities():
    image = np.array([[0.0, 50.0, 100.0]], np.float32)
    assert np.allclose(corrupt(image, "gamma", 2.0, seed=0, case="c"), [[0.0, 25.0, 100.0]])
    assert np.allclose(corrupt(image, "gamma", 0.5, seed=0, case="c"), [[0.0, 100 * np.sqrt(0.5), 100.0]])


def test_resolution_loss_removes_detail_finer_than_the_factor_and_keeps_smooth_content():
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 100.0  # one-pixel detail
    # 87 % of the one-pixel contrast is gone (what is left: the beat of resampling 64 -> 32 -> 64)
    assert corrupt(checker.astype(np.float32), "resolution", 2.0, seed=0, case="c").std() < 0.2 * checker.std()
    ramp = ramp_image((1, 64, 64))
    blurred = corrupt(ramp, "resolution", 2.0, seed=0, case="c")
    assert blurred.shape == ramp.shape
    assert np.abs(blurred - ramp)[:, :, 4:-4].max() < 1.0


@pytest.mark.parametrize("name, bad", [("poisson", 0.0), ("gaussian", -0.1), ("bias", -1.0), ("gamma", 0.0),
                                       ("resolution", 0.5)])
def test_impossible_strengths_are_refused(name, bad):
    with pytest.raises(ValueError, match=name):
        corrupt(ramp_image(), name, bad, seed=0, case="c")
