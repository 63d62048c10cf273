"""Mini copies of the public datasets' layouts (exact file and folder names, a few tiny images),
and nnU-Net's own dataset check run in-process.

The tests reach the builders through the ``layouts`` fixture (a test module cannot import a
sibling module under pytest's importlib import mode). Images are tiny so the whole folder runs in
seconds; pixel contents are random but seeded, so every run sees the same files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

IMAGE_SIZE_2D = (24, 32)  # (height, width)
AMOS_SHAPE = (12, 10, 6)  # nibabel order (x, y, z)
AMOS_LABELS = ["background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver",
               "stomach", "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum",
               "bladder", "prostate/uterus"]
# an affine with anisotropic spacing, a flip and a non-zero origin, as AMOS's NIfTI headers carry
AMOS_AFFINE = np.array([[-0.7, 0.0, 0.0, 120.0], [0.0, -0.7, 0.0, 95.0], [0.0, 0.0, 5.0, -300.0], [0, 0, 0, 1.0]])


def _save(array: np.ndarray, path: Path, **kwargs) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def binary_mask(seed: int, size=IMAGE_SIZE_2D, value: int = 255) -> np.ndarray:
    """A rectangle whose position depends on the seed, drawn with ``value`` on 0."""
    h, w = size
    y, x = 2 + seed % (h // 3), 2 + (seed * 7) % (w // 3)
    mask = np.zeros(size, np.uint8)
    mask[y: y + h // 2, x: x + w // 2] = value
    return mask


def photo(seed: int, size=IMAGE_SIZE_2D) -> np.ndarray:
    """A smooth-ish RGB image (JPEG keeps it close to the original)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 5 + seed * 11) % 256, (xx * 7 + seed * 3) % 256, (yy + xx + seed) % 256], -1)
    return base.astype(np.uint8)


def make_isic(root: Path, counts: dict[str, int] | None = None) -> Path:
    """ISIC 2018 Task 1 layout; ``counts`` per official part (a part with 0 is left out)."""
    counts = counts or {"Training": 6, "Validation": 2, "Test": 2}
    number = 0
    for part, count in counts.items():
        inputs = root / f"ISIC2018_Task1-2_{part}_Input"
        truth = root / f"ISIC2018_Task1_{part}_GroundTruth"
        if not count:
            continue
        inputs.mkdir(parents=True)
        truth.mkdir(parents=True)
        (inputs / "LICENSE.txt").write_text("CC-BY-NC")
        (inputs / "ATTRIBUTION.txt").write_text("ISIC")
        for _ in range(count):
            case = f"ISIC_{number:07d}"
            _save(photo(number), inputs / f"{case}.jpg", quality=95)
            _save(binary_mask(number), truth / f"{case}_segmentation.png")
            number += 1
    return root


def make_kvasir(root: Path, count: int = 10) -> Path:
    """Kvasir-SEG layout: images/NAME.jpg, masks/NAME.jpg (3-channel JPEG masks, as published)."""
    for i in range(count):
        name = f"cju{i:04d}kvasir{i:03d}"
        _save(photo(i), root / "images" / f"{name}.jpg", quality=90)
        _save(np.repeat(binary_mask(i)[..., None], 3, -1), root / "masks" / f"{name}.jpg", quality=75)
    return root


def make_busi(root: Path, counts: dict[str, int] | None = None) -> Path:
    """BUSI layout (Dataset_BUSI_with_GT): class folders, 'cls (N).png' and 'cls (N)_mask[_k].png'.

    Case 1 of benign and malignant has two masks (the union is expected); benign (2) is stored as
    RGB with equal channels; normal masks are empty; malignant (3) is an exact pixel copy of
    benign (3) (a duplicate, as BUSI has)."""
    counts = counts or {"benign": 6, "malignant": 4, "normal": 3}
    for cls, count in counts.items():
        folder = root / cls
        for n in range(1, count + 1):
            seed = {"benign": 0, "malignant": 100, "normal": 200}[cls] + n
            gray = photo(seed)[..., 0]
            if cls == "malignant" and n == 3:
                gray = photo(3)[..., 0]  # same pixels as benign (3)
            image = np.repeat(gray[..., None], 3, -1) if (cls, n) == ("benign", 2) else gray
            _save(image, folder / f"{cls} ({n}).png")
            mask = np.zeros(IMAGE_SIZE_2D, np.uint8) if cls == "normal" else binary_mask(seed)
            _save(mask, folder / f"{cls} ({n})_mask.png")
            if cls != "normal" and n == 1:
                second = np.zeros(IMAGE_SIZE_2D, np.uint8)
                second[-4:, -4:] = 255
                _save(second, folder / f"{cls} ({n})_mask_1.png")
    return root


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AMOS_AFFINE) -> None:
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, affine), str(path))


def make_amos(root: Path) -> Path:
    """amos22 layout: dataset.json and imagesTr/labelsTr (CT 1, 2, 4 and MRI 540), imagesVa/labelsVa
    (CT 5, 6 and MRI 541), imagesTs (CT 7, MRI 542)."""
    parts = {"training": ("imagesTr", "labelsTr", [1, 2, 4, 540]), "validation": ("imagesVa", "labelsVa", [5, 6, 541]),
             "test": ("imagesTs", None, [7, 542])}
    entries = {part: [] for part in parts}
    for part, (images, labels, numbers) in parts.items():
        for number in numbers:
            name = f"amos_{number:04d}.nii.gz"
            rng = np.random.default_rng(number)
            write_nifti(root / images / name, rng.integers(-1000, 1000, AMOS_SHAPE).astype(np.int16))
            entry = {"image": f"./{images}/{name}"}
            if labels:
                label = np.zeros(AMOS_SHAPE, np.uint8)
                label[2:8, 2:6, 1:4] = number % 15 + 1
                label[0, 0, 0] = 15
                write_nifti(root / labels / name, label)
                entry["label"] = f"./{labels}/{name}"
            entries[part].append(entry)
    dataset = {"name": "AMOS", "labels": {str(i): n for i, n in enumerate(AMOS_LABELS)}, "modality": {"0": "CT"},
               "numTraining": 4, "numValidation": 3, "numTest": 2, **entries}
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return root


def corrupt(path: Path) -> Path:
    """Overwrites a file with bytes no reader accepts (a truncated gzip for .gz files)."""
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + bytes(200))[:60])
    else:
        path.write_bytes(b"this is not an image")
    return path


@pytest.fixture
def layouts() -> SimpleNamespace:
    return SimpleNamespace(isic=make_isic, kvasir=make_kvasir, busi=make_busi, amos=make_amos, corrupt=corrupt,
                           write_nifti=write_nifti, binary_mask=binary_mask, photo=photo, save=_save,
                           image_size=IMAGE_SIZE_2D, amos_shape=AMOS_SHAPE, amos_labels=AMOS_LABELS,
                           amos_affine=AMOS_AFFINE)


@pytest.fixture
def raw_root(tmp_path, monkeypatch) -> Path:
    """$nnUNet_raw set to an empty folder for this test."""
    root = tmp_path / "nnUNet_raw"
    root.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(root))
    return root


@pytest.fixture
def nnunet_verify(monkeypatch, capsys):
    """nnunetv2's own ``verify_dataset_integrity`` on a written folder; fails on its errors and on
    any warning it prints (e.g. origin or direction mismatch between image and label).

    Its worker pool runs as threads here: spawned processes each re-import torch, seconds apiece
    on a 2-core machine, and the checks themselves are the same."""
    import multiprocessing.dummy

    from nnunetv2.experiment_planning import verify_dataset_integrity as module

    thread_context = SimpleNamespace(Pool=lambda processes: multiprocessing.dummy.Pool(processes))
    monkeypatch.setattr(module, "multiprocessing", SimpleNamespace(get_context=lambda method: thread_context))

    def verify(folder: Path) -> str:
        capsys.readouterr()
        module.verify_dataset_integrity(str(folder), num_processes=1)
        printed = capsys.readouterr().out
        assert "verify_dataset_integrity Done" in printed
        assert "warning" not in printed.lower() and "error" not in printed.lower().replace(
            "if you didn't see any error messages", ""), printed
        return printed

    return verify
