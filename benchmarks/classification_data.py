"""Image-classification data for bench_classification.py: scikit-learn's digits or an image folder.

Everything is loaded into memory as float32 tensors in [0, 1], (N, C, H, W), because the data
sets meant here are small (1,797 digits; CIFAR-10 is 50,000 x 3 x 32 x 32 = 0.6 GB as float32).
Nothing is downloaded: the digits ship inside scikit-learn (the optional extra ``bench``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
# scikit-learn's digits hold 4-bit grey values, 0..16
DIGITS_MAX_VALUE = 16.0


@dataclass
class ClassificationData:
    train_images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: List[str]
    source: str
    # held out of the training images to choose hyper-parameters (see with_validation_split)
    val_images: Optional[torch.Tensor] = None
    val_labels: Optional[torch.Tensor] = None

    @property
    def in_channels(self) -> int:
        return self.train_images.shape[1]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class split in the same proportion (fixed by ``seed``)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(members)))
        if n_test == 0 or n_test == len(members):
            raise ValueError(f"class {label} has {len(members)} images: too few to split with "
                             f"test_fraction={test_fraction}")
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    if images.shape[-2:] == (image_size, image_size):
        return images
    return F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)


def _split(images: torch.Tensor, labels: np.ndarray, class_names: List[str], source: str, test_fraction: float,
           split_seed: int) -> ClassificationData:
    train, test = stratified_split(labels, test_fraction, split_seed)
    labels_t = torch.as_tensor(labels, dtype=torch.int64)
    return ClassificationData(images[train], labels_t[train], images[test], labels_t[test], class_names, source)


def load_digits_data(image_size: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> ClassificationData:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), upsampled bilinearly."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise SystemExit("the digits need scikit-learn: pip install 'pu-nnunet[bench]' "
                         "(or pass --data FOLDER)") from error
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX_VALUE
    return _split(_resize(images, image_size), digits.target, [str(n) for n in digits.target_names],
                  "scikit-learn load_digits", test_fraction, split_seed)


def _class_folders(root: Path) -> List[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: no class subfolders (expected {root}/<class name>/<image files>)")
    return folders


def _read_image(path: Path, mode: str, image_size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _read_class_folders(root: Path, class_names: Optional[Sequence[str]], mode: str,
                        image_size: int) -> Tuple[torch.Tensor, np.ndarray, List[str]]:
    folders = _class_folders(root)
    names = [f.name for f in folders]
    if class_names is not None and names != list(class_names):
        raise ValueError(f"{root}: class folders {names} differ from the training classes {list(class_names)}")
    arrays, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        arrays += [_read_image(p, mode, image_size) for p in files]
        labels += [label] * len(files)
    images = torch.from_numpy(np.stack(arrays)).float().div_(255.0)
    return images, np.asarray(labels), names


def load_image_folder(root: Path, image_size: int, in_channels: int = 3, test_fraction: float = 0.2,
                      split_seed: int = 0) -> ClassificationData:
    """An ImageFolder-style tree: ``root/<class>/<image>``, or ``root/train/<class>/..`` and
    ``root/test/<class>/..`` for a given split (kept as it is). Images are converted to
    grey (``in_channels=1``) or RGB (3) and resized to ``image_size`` squared."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels!r}")
    mode = "L" if in_channels == 1 else "RGB"
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_images, train_labels, names = _read_class_folders(root / "train", None, mode, image_size)
        test_images, test_labels, _ = _read_class_folders(root / "test", names, mode, image_size)
        return ClassificationData(train_images, torch.as_tensor(train_labels), test_images,
                                  torch.as_tensor(test_labels), names, f"{root} (its train/test split)")
    images, labels, names = _read_class_folders(root, None, mode, image_size)
    return _split(images, labels, names, f"{root} (stratified split)", test_fraction, split_seed)


def with_validation_split(data: ClassificationData, val_fraction: float, seed: int) -> ClassificationData:
    """``data`` with a stratified share ``val_fraction`` of its training images moved to a
    validation split (the test split is untouched, so choices made on validation never see it)."""
    fit, val = stratified_split(data.train_labels.numpy(), val_fraction, seed)
    return ClassificationData(data.train_images[fit], data.train_labels[fit], data.test_images, data.test_labels,
                              data.class_names, data.source, data.train_images[val], data.train_labels[val])


def poisson_noise(images: torch.Tensor, peak: float, seed: int) -> torch.Tensor:
    """Signal-dependent (shot) noise: a pixel of intensity x in [0, 1] becomes Poisson(peak x) / peak,
    so its mean stays x and its variance x / peak grows with the signal; ``peak`` is the expected
    photon count of a full-intensity (x = 1) pixel, lower is noisier. Not renormalised (no
    rescaling to the noisy image's range); values above 1 (a count above ``peak``) are clipped
    back to 1, as an 8-bit detector saturates."""
    if not peak > 0:
        raise ValueError(f"peak must be positive, got {peak!r}")
    generator = torch.Generator().manual_seed(seed)
    return torch.poisson(images * peak, generator=generator).div_(peak).clamp_(0, 1)
