"""A synthetic breast-ultrasound dataset in BUSI's format: 2D grayscale PNG, lesion masks, and
normal images with no lesion, with a ``cases.json`` (class and split per case) like BUSI's.

Each image is layered tissue (skin, fat, gland) whose echogenicity falls off with depth, times
multiplicative speckle (fully developed speckle: Rayleigh-distributed amplitude, spatially
correlated), then log-compressed to 8 bits. Lesions are hypoechoic (darker) regions of varying
contrast: benign ones smooth ellipses, malignant ones irregular (a noisy, lobulated outline) and
with posterior shadowing; normal images have none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pu_nnunet.datasets.shared.case_metadata import TEST_SPLIT, TRAIN_SPLIT, write_cases_json
from pu_nnunet.datasets.errors import DatasetError
from pu_nnunet.datasets.shared.images_2d import write_png
from pu_nnunet.datasets.shared.raw_folder import atomic_dataset_folder, dataset_folder_name, make_raw_layout
from pu_nnunet.datasets.shared.splits import check_seed, stratified_group_folds, stratified_holdout, write_splits
from pu_nnunet.datasets.synthetic.random_field import smooth_random_field

# class shares as in BUSI (437 benign, 210 malignant, 133 normal of 780)
CLASS_SHARES = {"benign": 437 / 780, "malignant": 210 / 780, "normal": 133 / 780}
NORMAL_CLASS = "normal"

# tissue layers from the top (skin line) down, as fractions of the image height, and their echogenicity
LAYERS = ((0.06, 0.9), (0.30, 0.45), (1.0, 0.7))  # (bottom edge, echogenicity): skin, fat, gland
LAYER_EDGE_WOBBLE = 0.03
# echogenicity at the bottom of the image relative to the top: time-gain compensation is never perfect
DEPTH_ATTENUATION = 0.45
# speckle correlation length in pixels (the resolution cell of the probe)
SPECKLE_CORRELATION_PX = 1.2
# lesion echogenicity relative to the tissue around it: darker (hypoechoic), varying per case
LESION_CONTRAST = (0.12, 0.5)
# lesion half-axes as fractions of the image size, and centre range (kept below the skin and fat)
LESION_RADIUS = (0.10, 0.22)
LESION_CENTRE_Y = (0.40, 0.65)
LESION_CENTRE_X = (0.30, 0.70)
# malignant outlines: radial noise made of harmonics MALIGNANT_HARMONICS, amplitude falling as
# 1/k, scaled so the outline moves by about this fraction of the radius (lobulated, not star-like)
MALIGNANT_IRREGULARITY = 0.3
MALIGNANT_HARMONICS = (2, 9)
# benign lesions are "wider than tall" (a classic ultrasound sign): height/width ratio range
BENIGN_ASPECT = (0.55, 1.0)
# the outline never comes closer to the centre than this fraction of the radius (one piece)
MIN_OUTLINE = 0.45
# posterior acoustic shadow below malignant lesions: echogenicity kept directly below them
SHADOW_STRENGTH = 0.75
# log compression: dynamic range (dB) mapped onto 0..255
DYNAMIC_RANGE_DB = 40.0

PNG = ".png"
MIN_SIZE = 32


def _class_sequence(rng: np.random.Generator, num_cases: int) -> list[str]:
    """Classes in BUSI's proportions, at least one of each when there are three or more cases."""
    counts = {cls: int(round(share * num_cases)) for cls, share in CLASS_SHARES.items()}
    for cls in CLASS_SHARES:
        if num_cases >= len(CLASS_SHARES):
            counts[cls] = max(counts[cls], 1)
    while sum(counts.values()) > num_cases:
        counts[max(counts, key=counts.get)] -= 1
    while sum(counts.values()) < num_cases:
        counts["benign"] += 1
    sequence = [cls for cls, n in counts.items() for _ in range(n)]
    return [sequence[i] for i in rng.permutation(num_cases)]


def _lesion_mask(rng: np.random.Generator, cls: str, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(*LESION_CENTRE_Y) * h, rng.uniform(*LESION_CENTRE_X) * w
    ry, rx = rng.uniform(*LESION_RADIUS, 2) * (h, w)
    if cls == "benign":
        ry = rx * rng.uniform(*BENIGN_ASPECT)
    dy, dx = (y - cy) / ry, (x - cx) / rx
    radius, angle = np.hypot(dy, dx), np.arctan2(dy, dx)
    outline = np.ones_like(radius)
    if cls == "malignant":
        harmonics = np.arange(*MALIGNANT_HARMONICS)
        weights = rng.standard_normal(len(harmonics)) / harmonics
        phases = rng.uniform(0, 2 * np.pi, len(harmonics))
        wobble = sum(wt * np.sin(k * angle + ph) for k, wt, ph in zip(harmonics, weights, phases))
        outline += MALIGNANT_IRREGULARITY * wobble / np.sqrt(np.sum(weights ** 2) / 2)
        outline = np.maximum(outline, MIN_OUTLINE)
    return radius < outline


def synthesize_image(rng: np.random.Generator, cls: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8, mask uint8 0/1) pair of the given (height, width)."""
    h, w = shape
    depth = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    # a layer starts where the one above ends; each boundary wobbles smoothly across the image
    layer = np.zeros(shape, np.int64)
    for bottom, _ in LAYERS[:-1]:
        boundary = bottom + LAYER_EDGE_WOBBLE * smooth_random_field(rng, (1, w), w / 8)
        layer += depth >= boundary
    levels = np.array([level for _, level in LAYERS]) * rng.uniform(0.85, 1.15, len(LAYERS))
    echo = levels[layer].astype(np.float32)
    echo *= 1.0 - DEPTH_ATTENUATION * depth
    echo *= 1.0 + 0.15 * smooth_random_field(rng, shape, min(h, w) / 10)  # slow tissue inhomogeneity

    mask = np.zeros(shape, np.uint8)
    if cls != NORMAL_CLASS:
        lesion = _lesion_mask(rng, cls, shape)
        echo[lesion] *= rng.uniform(*LESION_CONTRAST)
        if cls == "malignant":
            columns = lesion.any(axis=0)
            below = (np.cumsum(lesion, axis=0) > 0) & ~lesion & columns[None, :]
            echo[below] *= SHADOW_STRENGTH
        mask = lesion.astype(np.uint8)

    # fully developed speckle: complex Gaussian scatter, correlated over the resolution cell
    from scipy.ndimage import gaussian_filter

    real = gaussian_filter(rng.standard_normal(shape), SPECKLE_CORRELATION_PX)
    imaginary = gaussian_filter(rng.standard_normal(shape), SPECKLE_CORRELATION_PX)
    speckle = np.hypot(real, imaginary)
    envelope = echo * speckle / speckle.mean()
    decibels = 20.0 * np.log10(np.maximum(envelope, 1e-6) / envelope.max())
    image = np.clip((decibels + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB, 0.0, 1.0) * 255.0
    return np.round(image).astype(np.uint8), mask


def generate_synthetic_ultrasound(raw_root: str | Path, dataset_id: int, name: str = "SynthUS",
                                  num_cases: int = 40, num_test: int = 10, seed: int = 0,
                                  shape: tuple[int, int] = (128, 128), overwrite: bool = False) -> Path:
    """Writes raw_root/DatasetIII_name with imagesTr/labelsTr and imagesTs/labelsTs (num_test cases,
    stratified by class so every class is in the test set), dataset.json, cases.json and
    splits_final.json (class-stratified 5 folds of the training cases); returns the dataset folder.
    shape is (height, width). Deterministic for a given seed."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    shape = tuple(int(s) for s in shape)
    check_seed(seed)
    if len(shape) != 2 or min(shape) < MIN_SIZE:
        raise DatasetError(f"shape must be two sizes (height, width) of at least {MIN_SIZE} pixels, got {shape}")
    if num_test < 1 or num_cases - num_test < 2:
        raise DatasetError(f"need at least 1 test and 2 training cases: num_cases={num_cases}, num_test={num_test}")
    classes_in_order = _class_sequence(np.random.default_rng([seed, num_cases]), num_cases)
    cases = {f"case_{i:03d}": cls for i, cls in enumerate(classes_in_order)}
    training, test = stratified_holdout(list(cases), cases, num_test / num_cases, seed, num_held_out=num_test)
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite) as work:
        folders = make_raw_layout(work, with_test_images=True, with_test_labels=True)
        for index, (case, cls) in enumerate(cases.items()):
            image, mask = synthesize_image(np.random.default_rng([seed, index]), cls, shape)
            part = "Tr" if case in set(training) else "Ts"
            write_png(image, folders[f"images{part}"] / f"{case}_0000{PNG}")
            write_png(mask, folders[f"labels{part}"] / f"{case}{PNG}")
        write_cases_json(work, {case: {"class": cls, "split": TRAIN_SPLIT if case in set(training) else TEST_SPLIT}
                                for case, cls in cases.items()})
        write_splits(work, stratified_group_folds(training, cases, seed))
        generate_dataset_json(str(work), {0: "ultrasound"}, {"background": 0, "lesion": 1},
                              num_training_cases=len(training), file_ending=PNG, dataset_name=name,
                              license="synthetic data, no restrictions", converted_by="pu-nnunet synth ultrasound",
                              description="Synthetic breast ultrasound generated by "
                                          "pu_nnunet.datasets.synthetic.ultrasound; classes in cases.json",
                              numTest=len(test), synthetic={"generator": "ultrasound", "seed": seed,
                                                            "shape_hw": list(shape)})
    return Path(raw_root) / dataset_folder_name(dataset_id, name)
