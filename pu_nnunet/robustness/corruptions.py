"""Image corruptions at a given strength, deterministic for a seed.

Every corruption maps an image array (any dimension; the last two axes are the image plane)
to one of the same shape and dtype float32. Intensities are handled through an
:class:`IntensityModel`: the value that means "no signal" (``zero``) and a reference signal
(``scale``), so that Poisson noise and the bias field act on a non-negative signal:

- CT (dataset.json channel name "CT"): HU + 1000 is proportional to the linear attenuation
  (air -1000 HU = 0, water 0 HU = 1000 = the reference). Poisson noise there is an image-domain
  low-dose model: the attenuation image is rescaled so that water holds ``photons`` expected
  counts, drawn, and mapped back, so a water voxel gets a standard deviation of
  1000 / sqrt(photons) HU. (Real CT noise arises in the projections and is shaped by the
  reconstruction filter; this keeps its signal dependence and strength, not its texture.)
- anything else: intensities are taken as a non-negative signal (negatives clipped to 0), the
  reference is the case's maximum: a pixel at the maximum holds ``photons`` counts.

Strengths: Poisson by photon count at the reference (fewer = noisier); Gaussian by standard
deviation as a fraction of the case's intensity range (0.5th to 99.5th percentile); bias field by
the standard deviation of log(field) (a smooth multiplicative field); gamma by the exponent
applied to intensities rescaled to [0, 1] between the case's minimum and maximum; resolution by
the in-plane downsampling factor (linear down and up again, with Gaussian anti-aliasing).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pu_nnunet.datasets.synthetic.random_field import smooth_random_field

# HU of air (no attenuation) and water minus air: attenuation relative to water = (HU + 1000) / 1000
CT_AIR_HU, CT_WATER_MINUS_AIR_HU = -1000.0, 1000.0
# the intensity range of the Gaussian noise's strength: robust to a few extreme voxels
RANGE_PERCENTILES = (0.5, 99.5)
# bias field smoothness: one Gaussian sigma of this fraction of the in-plane size (a slowly
# varying field, as coil sensitivity or ultrasound gain across the image)
BIAS_FIELD_SMOOTHING = 0.25
# anti-aliasing before downsampling by factor f: sigma = (f - 1) / 2 pixels (scikit-image's rule)
ANTI_ALIAS_PER_FACTOR = 0.5

# defaults of the sweep: three strengths each, mild to strong
DEFAULT_STRENGTHS: dict[str, tuple[float, ...]] = {
    "poisson": (1000.0, 100.0, 10.0),   # photons at the reference: water (CT) or the case maximum
    "gaussian": (0.05, 0.1, 0.2),       # sd / intensity range
    "bias": (0.1, 0.2, 0.4),            # sd of log(field)
    "gamma": (0.5, 1.5, 2.5),           # exponent on [0, 1]-rescaled intensities
    "resolution": (1.5, 2.0, 3.0),      # in-plane downsampling factor
}
# the strength at which each corruption is the identity (the clean image)
IDENTITY_STRENGTH = {"poisson": float("inf"), "gaussian": 0.0, "bias": 0.0, "gamma": 1.0, "resolution": 1.0}


# the strengths each corruption takes, (lowest, highest), both included unless the identity.
# Upper bounds: beyond them the image is pure noise or a single value, and the arithmetic leaves
# float32 (numpy's Poisson sampler refuses rates above ~9e18; exp(bias) overflows past ~88)
STRENGTH_RANGE = {
    "poisson": (1e-3, 1e12),      # photons at the reference signal
    "gaussian": (0.0, 100.0),     # sd / intensity range: 100 ranges of noise is noise only
    "bias": (0.0, 10.0),          # sd of log(field): exp(10 * 3 sd) already spans 1e13
    "gamma": (1e-2, 1e2),         # exponent: 0.01 and 100 map every pixel to one end
    "resolution": (1.0, 64.0),    # in-plane downsampling factor: 64 leaves a 512 image 8 pixels
}


def strength_problem(corruption: str, strength) -> str | None:
    """Why ``strength`` is not a strength of ``corruption`` (not a finite number, out of
    :data:`STRENGTH_RANGE`, the identity), None when it is one. One rule for pu-nnunet robustness
    and a study's sweep, checked before any work."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        return f"{corruption} {strength!r}: not a finite number"
    if strength == IDENTITY_STRENGTH[corruption]:
        return f"{corruption} {strength:g}: leaves the image clean"
    low, high = STRENGTH_RANGE[corruption]
    if not low <= strength <= high:
        return f"{corruption} {strength:g}: out of range, {corruption} takes {low:g} to {high:g}"
    return None


def seed_problem(seed) -> str | None:
    """numpy's generators take non-negative integer seeds."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        return f"seed {seed!r}: expected a non-negative integer"
    return None


def parse_strengths(corruptions: list[str], overrides: list[str],
                    option: str = "--strengths") -> dict[str, tuple[float, ...]]:
    """The strengths of each corruption: the defaults, replaced by ``CORRUPTION=S1,S2`` overrides
    (``option`` names where they came from in the error message)."""
    from pu_nnunet.robustness.errors import RobustnessError

    unknown = [name for name in corruptions if name not in DEFAULT_STRENGTHS]
    if unknown:
        raise RobustnessError(f"{option}: unknown corruption(s) {unknown}; choose from {', '.join(CORRUPTIONS)}")
    strengths = {name: DEFAULT_STRENGTHS[name] for name in corruptions}
    for value in overrides:
        name, sep, numbers = value.partition("=")
        if not sep or name not in strengths:
            raise RobustnessError(f"{option} {value}: expected CORRUPTION=S1,S2,... with CORRUPTION one of "
                                  f"{', '.join(corruptions)}")
        try:
            strengths[name] = tuple(float(number) for number in numbers.split(","))
        except ValueError:
            raise RobustnessError(f"{option} {value}: {numbers!r} is not a comma-separated list of numbers") from None
        for strength in strengths[name]:
            problem = strength_problem(name, strength)
            if problem:
                raise RobustnessError(f"{option} {value}: {problem}")
        if len(set(strengths[name])) < len(strengths[name]):
            raise RobustnessError(f"{option} {value}: a strength is given twice")
    return strengths


@dataclass(frozen=True)
class IntensityModel:
    """Where the signal is zero and what counts as a reference signal; ``scale`` None = the case maximum."""

    name: str
    zero: float = 0.0
    scale: float | None = None

    def signal(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        signal = np.clip(image - self.zero, 0.0, None)
        scale = self.scale if self.scale is not None else float(signal.max())
        return signal, scale


CT_MODEL = IntensityModel("ct", zero=CT_AIR_HU, scale=CT_WATER_MINUS_AIR_HU)
INTENSITY_MODEL = IntensityModel("intensity")


def intensity_model(channel_name: str) -> IntensityModel:
    """The model of a dataset.json channel name: CT's attenuation for "CT", else non-negative intensity."""
    return CT_MODEL if channel_name.strip().upper() == "CT" else INTENSITY_MODEL


def case_rng(seed: int, corruption: str, strength: float, case: str) -> np.random.Generator:
    """A generator fixed by the seed, the corruption, its strength and the case (not by the order of work)."""
    return np.random.default_rng([seed, zlib.crc32(corruption.encode()), zlib.crc32(repr(float(strength)).encode()),
                                  zlib.crc32(case.encode())])


def poisson(image, photons, rng, model):
    if not photons > 0:
        raise ValueError(f"poisson: the photon count must be positive, got {photons!r}")
    signal, scale = model.signal(image)
    if scale <= 0:
        return image.copy()
    counts = rng.poisson(signal * (photons / scale))
    return (counts * (scale / photons) + model.zero).astype(np.float32)


def gaussian(image, sd_fraction, rng, model):
    if sd_fraction < 0:
        raise ValueError(f"gaussian: the standard deviation must be >= 0, got {sd_fraction!r}")
    low, high = np.percentile(image, RANGE_PERCENTILES)
    return (image + rng.normal(0.0, sd_fraction * float(high - low), image.shape)).astype(np.float32)


def bias_field(image, log_sd, rng, model):
    if log_sd < 0:
        raise ValueError(f"bias: the standard deviation of log(field) must be >= 0, got {log_sd!r}")
    plane = image.shape[-2:]
    smoothing = [0.0] * (image.ndim - 2) + [BIAS_FIELD_SMOOTHING * n for n in plane]
    # one field for the whole image, smooth in-plane; constant across slices of a 3D volume
    log_field = smooth_random_field(rng, (1,) * (image.ndim - 2) + plane, smoothing)
    # centred: the field changes the contrast across the image, not the mean brightness
    field = np.exp(log_sd * (log_field - log_field.mean()))
    signal, _ = model.signal(image)
    return (signal * field + model.zero).astype(np.float32)


def gamma(image, exponent, rng, model):
    if not exponent > 0:
        raise ValueError(f"gamma: the exponent must be positive, got {exponent!r}")
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return image.copy()
    return (low + (high - low) * ((image - low) / (high - low)) ** exponent).astype(np.float32)


def resolution(image, factor, rng, model):
    from scipy.ndimage import gaussian_filter, zoom

    if factor < 1:
        raise ValueError(f"resolution: the downsampling factor must be >= 1, got {factor!r}")
    if factor == 1:
        return image.copy()
    sigma = [0.0] * (image.ndim - 2) + [ANTI_ALIAS_PER_FACTOR * (factor - 1)] * 2
    # mode "nearest": the border is extended, not padded with zeros (which would darken the edges)
    small = zoom(gaussian_filter(image.astype(np.float64), sigma, mode="nearest"),
                 [1.0] * (image.ndim - 2) + [1 / factor] * 2, order=1, mode="nearest")
    # back to the exact original shape: per-axis factors from the rounded small shape
    back = [1.0] * (image.ndim - 2) + [n / m for n, m in zip(image.shape[-2:], small.shape[-2:])]
    return zoom(small, back, order=1, mode="nearest").astype(np.float32)[tuple(slice(0, n) for n in image.shape)]


CORRUPTIONS: dict[str, Callable] = {"poisson": poisson, "gaussian": gaussian, "bias": bias_field, "gamma": gamma,
                                    "resolution": resolution}


def corrupt(image: np.ndarray, corruption: str, strength: float, seed: int, case: str,
            model: IntensityModel = INTENSITY_MODEL) -> np.ndarray:
    """``image`` under ``corruption`` at ``strength``; the same seed, case and strength give the same result."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose from {', '.join(CORRUPTIONS)}")
    image = np.asarray(image, dtype=np.float32)
    return CORRUPTIONS[corruption](image, float(strength), case_rng(seed, corruption, strength, case), model)
