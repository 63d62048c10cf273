"""A synthetic abdominal CT dataset: runs everywhere with no download, learnable in minutes on CPU.

Each case is a volume with air outside an elliptic body (soft tissue, a ring of subcutaneous fat,
a vertebra that is not labelled) and up to five organs drawn as smooth, deformed blobs whose mean
HU values lie far apart relative to the noise, so a small 2D U-Net separates them by intensity,
and by position where two organs share an intensity (the kidneys). Shapes, sizes, positions,
intensities and geometry vary per case; every ``ABSENT_ORGAN_EVERY``-th case lacks one organ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pu_nnunet.datasets.errors import DatasetError
from pu_nnunet.datasets.shared.raw_folder import atomic_dataset_folder, dataset_folder_name, make_raw_layout
from pu_nnunet.datasets.shared.splits import check_seed, cross_validation_splits, write_splits
from pu_nnunet.datasets.synthetic.random_field import smooth_random_field
from pu_nnunet.user_errors import error_reason
from pu_nnunet.user_files import damaged_file_problem

# HU of the materials: air, fat and soft tissue as in real CT; bone set below cortical bone
# (~1000) because the vertebra is small and only has to be bright
AIR_HU = -1000.0
FAT_HU = -90.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 600.0
# per-voxel Gaussian noise, about that of a low-dose abdominal CT
NOISE_SD_HU = 15.0
# each case shifts each organ's mean by up to this much, and a smooth texture adds this much
ORGAN_HU_JITTER = 10.0
ORGAN_TEXTURE_SD_HU = 8.0

# body ellipse half-axes as fractions of the image height/width, and its per-case variation
BODY_HALF_AXES = (0.40, 0.46)
BODY_SIZE_JITTER = 0.05
BODY_CENTRE_JITTER = 0.03
# the fat ring is the outer part of the body, beyond this fraction of the body radius
FAT_RING_INNER = 0.88
# the body narrows by this fraction at the first and last slice (it is widest mid-volume)
BODY_TAPER = 0.1
# vertebra: centre and radius in body coordinates (u along y, 1 = body half-axis)
VERTEBRA_CENTRE_U = 0.65
VERTEBRA_RADIUS_U = 0.15

# organ shape variation per case
ORGAN_CENTRE_JITTER = 0.06
ORGAN_RADIUS_SCALE = (0.85, 1.15)
ORGAN_MAX_ROTATION_RAD = np.deg2rad(25.0)
ORGAN_Z_CENTRE_JITTER = 0.06
# a smooth random field added to the ellipse equation: bumps the outline by up to ~25 %
ORGAN_DEFORMATION = 0.25
# smoothing of that field, in voxels (z, y, x): a few bumps per organ, not speckle
DEFORMATION_SMOOTHING_VOXELS = (1.0, 4.0, 4.0)
# exponent of the z term: > 2 gives flat ends, so an organ covers much of every slice it is in
ORGAN_Z_EXPONENT = 4.0

# one case in this many lacks one organ (index % ABSENT_ORGAN_EVERY == ABSENT_ORGAN_EVERY - 1)
ABSENT_ORGAN_EVERY = 4

# NIfTI direction (x, y, z rows): the x and y flips many scanners' NIfTI exports carry
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
# the origin is centred on the volume, then shifted per case by up to this many mm
ORIGIN_JITTER_MM = 20.0

FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class OrganPrototype:
    """An organ's mean look: position and half-axes in body coordinates (u along y, v along x,
    1 = the body's half-axis), and its z centre and half-extent as fractions of the slice count."""

    name: str
    mean_hu: float
    centre_uv: tuple[float, float]
    radii_uv: tuple[float, float]
    z_centre: float
    z_half_extent: float


# HU means 60+ HU apart (4 noise SDs); the two kidneys share one HU and differ by side
ORGANS: tuple[OrganPrototype, ...] = (
    OrganPrototype("liver", 120.0, (-0.22, -0.42), (0.46, 0.40), 0.45, 0.38),
    OrganPrototype("spleen", 185.0, (-0.18, 0.48), (0.36, 0.30), 0.45, 0.32),
    OrganPrototype("left kidney", 260.0, (0.42, 0.42), (0.32, 0.27), 0.55, 0.32),
    OrganPrototype("right kidney", 260.0, (0.42, -0.42), (0.32, 0.27), 0.55, 0.32),
    OrganPrototype("stomach", -300.0, (-0.52, 0.02), (0.25, 0.18), 0.40, 0.25),
)
MAX_ORGANS = len(ORGANS)


def _organ_mask(rng: np.random.Generator, organ: OrganPrototype, shape: tuple[int, int, int],
                grid: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """A deformed, rotated super-ellipsoid around the organ's (jittered) mean position."""
    z, u, v = grid
    cu, cv = np.asarray(organ.centre_uv) + rng.uniform(-ORGAN_CENTRE_JITTER, ORGAN_CENTRE_JITTER, 2)
    ru, rv = np.asarray(organ.radii_uv) * rng.uniform(*ORGAN_RADIUS_SCALE, 2)
    cz = (organ.z_centre + rng.uniform(-ORGAN_Z_CENTRE_JITTER, ORGAN_Z_CENTRE_JITTER)) * shape[0]
    rz = organ.z_half_extent * rng.uniform(*ORGAN_RADIUS_SCALE) * shape[0]
    angle = rng.uniform(-ORGAN_MAX_ROTATION_RAD, ORGAN_MAX_ROTATION_RAD)
    du, dv = u - cu, v - cv
    ru_rot = du * np.cos(angle) + dv * np.sin(angle)
    rv_rot = -du * np.sin(angle) + dv * np.cos(angle)
    level = ((ru_rot / ru) ** 2 + (rv_rot / rv) ** 2 + np.abs((z - cz) / rz) ** ORGAN_Z_EXPONENT
             + ORGAN_DEFORMATION * smooth_random_field(rng, shape, DEFORMATION_SMOOTHING_VOXELS))
    return level < 1.0


def synthesize_case(rng: np.random.Generator, shape: tuple[int, int, int], num_organs: int,
                    absent_organ: int | None) -> tuple[np.ndarray, np.ndarray]:
    """One (image int16 HU, label uint8) pair of the given (z, y, x) shape."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz, dtype=np.float32), np.arange(ny, dtype=np.float32),
                          np.arange(nx, dtype=np.float32), indexing="ij")
    half_y, half_x = (np.asarray(BODY_HALF_AXES) * (ny, nx)
                      * rng.uniform(1 - BODY_SIZE_JITTER, 1 + BODY_SIZE_JITTER, 2))
    centre_y, centre_x = np.array([ny, nx]) * (0.5 + rng.uniform(-BODY_CENTRE_JITTER, BODY_CENTRE_JITTER, 2))
    # the body is widest mid-volume: scale the body coordinates up towards the ends
    taper = 1.0 - BODY_TAPER * ((z - (nz - 1) / 2) / max(nz / 2, 1)) ** 2
    u = (y - centre_y) / (half_y * taper)
    v = (x - centre_x) / (half_x * taper)
    radius = np.sqrt(u ** 2 + v ** 2)

    image = np.full(shape, AIR_HU, dtype=np.float32)
    body = radius < 1.0
    image[body] = SOFT_TISSUE_HU
    image[body & (radius >= FAT_RING_INNER)] = FAT_HU
    # vertebra as a circle in pixels (u's scale), posterior in the body
    vertebra = ((u - VERTEBRA_CENTRE_U) ** 2 + (v * half_x / half_y) ** 2) < VERTEBRA_RADIUS_U ** 2
    image[vertebra & body] = BONE_HU

    label = np.zeros(shape, dtype=np.uint8)
    for index, organ in enumerate(ORGANS[:num_organs]):
        # drawn even when absent so the random stream (and the other organs) stay the same
        mask = _organ_mask(rng, organ, shape, (z, u, v)) & body & ~vertebra
        mean_hu = organ.mean_hu + rng.uniform(-ORGAN_HU_JITTER, ORGAN_HU_JITTER)
        texture = ORGAN_TEXTURE_SD_HU * smooth_random_field(rng, shape, DEFORMATION_SMOOTHING_VOXELS)
        if index == absent_organ:
            continue
        image[mask] = mean_hu + texture[mask]
        label[mask] = index + 1
    image += rng.normal(0.0, NOISE_SD_HU, shape).astype(np.float32)
    info = np.iinfo(np.int16)
    return np.clip(np.round(image), info.min, info.max).astype(np.int16), label


def _write_pair(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path,
                spacing_zyx: tuple[float, float, float], origin_xyz: tuple[float, float, float]) -> None:
    import SimpleITK as sitk

    for array, path in ((image, image_path), (label, label_path)):
        itk = sitk.GetImageFromArray(array)
        # SimpleITK orders geometry (x, y, z), numpy arrays (z, y, x)
        itk.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
        itk.SetOrigin(origin_xyz)
        itk.SetDirection(DIRECTION)
        try:
            sitk.WriteImage(itk, str(path), useCompression=True)
        except RuntimeError as error:  # ITK reports a full disk or an unwritable path this way
            raise DatasetError(f"{path}: cannot write: {error_reason(error)}") from None
        # ITK's NIfTI writer only prints a message when the disk is full; the file is then cut short
        problem = damaged_file_problem(path)
        if problem is not None:
            raise DatasetError(f"{path}: writing failed, the file is incomplete (disk full?): {problem}")


def _case_origin(rng: np.random.Generator, shape: tuple[int, int, int],
                 spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    extent_xyz = np.asarray(shape[::-1], dtype=float) * np.asarray(spacing[::-1])
    # x and y run in the negative world direction (DIRECTION), so the centred origin is +extent/2 there
    centred = np.array([extent_xyz[0] / 2, extent_xyz[1] / 2, -extent_xyz[2] / 2])
    return tuple(float(c) for c in centred + rng.uniform(-ORIGIN_JITTER_MM, ORIGIN_JITTER_MM, 3))


def _check_arguments(num_cases: int, num_test: int, shape: tuple[int, ...], spacing: tuple[float, ...],
                     num_organs: int) -> None:
    if num_test < 0 or num_cases - num_test < 2:
        raise DatasetError(f"need at least 2 training cases: num_cases={num_cases}, num_test={num_test}")
    if len(shape) != 3 or min(shape) < 4:
        raise DatasetError(f"shape must be three sizes (z, y, x) of at least 4 voxels, got {shape}")
    # "not s > 0" also refuses NaN (min() would pass a NaN in first place)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DatasetError(f"spacing must be three positive sizes in mm (z, y, x), got {spacing}")
    if not 1 <= num_organs <= MAX_ORGANS:
        raise DatasetError(f"num_organs must be between 1 and {MAX_ORGANS}, got {num_organs}")


def generate_synthetic_ct(raw_root: str | Path, dataset_id: int, name: str = "SynthCT", num_cases: int = 12,
                          num_test: int = 4, seed: int = 0, shape: tuple[int, int, int] = (24, 64, 64),
                          spacing: tuple[float, float, float] = (3.0, 0.8, 0.8), num_organs: int = 3,
                          overwrite: bool = False) -> Path:
    """Writes raw_root/DatasetIII_name with imagesTr/labelsTr (num_cases - num_test cases) and
    imagesTs/labelsTs (num_test cases), dataset.json, returns the dataset folder. shape and spacing are (z, y, x).

    Also writes ``splits_final.json`` (nnU-Net's own seeded 5-fold split of the training cases).
    Case ``case_XXX`` depends only on (seed, XXX), not on num_cases. Raises ``DatasetError`` for bad
    arguments and ``TargetExistsError`` for an existing target without overwrite.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    _check_arguments(num_cases, num_test, shape, spacing, num_organs)
    check_seed(seed)
    num_train = num_cases - num_test
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite) as work:
        folders = make_raw_layout(work, with_test_images=num_test > 0, with_test_labels=num_test > 0)
        training = []
        for index in range(num_cases):
            rng = np.random.default_rng([seed, index])
            absent = None
            if num_organs >= 2 and index % ABSENT_ORGAN_EVERY == ABSENT_ORGAN_EVERY - 1:
                absent = int(rng.integers(num_organs))
            image, label = synthesize_case(rng, shape, num_organs, absent)
            case = f"case_{index:03d}"
            part = "Tr" if index < num_train else "Ts"
            if part == "Tr":
                training.append(case)
            _write_pair(image, label, folders[f"images{part}"] / f"{case}_0000{FILE_ENDING}",
                        folders[f"labels{part}"] / f"{case}{FILE_ENDING}", spacing, _case_origin(rng, shape, spacing))
        labels = {"background": 0, **{organ.name: i + 1 for i, organ in enumerate(ORGANS[:num_organs])}}
        generate_dataset_json(str(work), {0: "CT"}, labels, num_training_cases=num_train, file_ending=FILE_ENDING,
                              dataset_name=name, license="synthetic data, no restrictions",
                              converted_by="pu-nnunet synth ct",
                              description="Synthetic abdominal CT generated by pu_nnunet.datasets.synthetic.ct",
                              numTest=num_test,
                              synthetic={"generator": "ct", "seed": seed, "shape_zyx": list(shape),
                                         "spacing_zyx": list(spacing), "num_organs": num_organs})
        write_splits(work, cross_validation_splits(training))
    return Path(raw_root) / dataset_folder_name(dataset_id, name)
