"""Reading 2D photographs/scans and their masks, and writing them the way nnU-Net's
``NaturalImage2DIO`` reads them: PNG, RGB as one 3-channel file, masks holding 0..N.

Every reader turns a problem into ``BadCaseError`` naming the file, so a converter can skip
the case or report it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pu_nnunet.datasets.errors import BadCaseError

# binary masks published as 8-bit images mark the object with 255
MASK_FOREGROUND_VALUE = 255
# JPEG masks (Kvasir-SEG) are lossy: threshold halfway between 0 and 255
JPEG_MASK_THRESHOLD = 128
# values this far from both 0 and 255 are not compression noise, only edge ringing is expected there
JPEG_MASK_AMBIGUOUS_RANGE = (64, 192)
# a JPEG mask with more than this share of such pixels is not a binary mask
JPEG_MASK_MAX_AMBIGUOUS_FRACTION = 0.05
# an RGB image whose channels differ by at most this much is grayscale stored as RGB
GRAYSCALE_CHANNEL_TOLERANCE = 0
# EXIF tag 274 (Orientation): how the stored pixels must be turned to show the picture upright
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATIONS = {1: "upright", 2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
                     5: "mirrored and rotated 90 degrees", 6: "rotated 90 degrees clockwise",
                     7: "mirrored and rotated 270 degrees", 8: "rotated 90 degrees counter-clockwise"}
# a mask "clearly holds" an object when at least this many pixels carry its value: a few stray
# non-zero pixels are JPEG noise around an empty mask
MIN_OBJECT_PIXELS = 16
# the converted label must keep at least this share of the object the source mask shows
MIN_KEPT_FRACTION = 0.5
# zlib level 1: several times faster than PIL's default 6 on large images, files ~10-20 % larger
PNG_COMPRESS_LEVEL = 1


def exif_orientation(path: str | Path) -> int:
    """The file's EXIF orientation (1, upright, when it has none)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception as error:  # PIL raises many types for broken files
        raise BadCaseError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from None
    return value if value in EXIF_ORIENTATIONS else 1


def check_same_orientation(image_path: str | Path, mask_paths: list[str | Path]) -> int:
    """The EXIF orientation image and masks share (each file is turned upright by its own tag when
    read, as viewers show it); differing ones are refused, naming both: the mask may have been
    drawn on the stored pixels or on the upright picture, and only its author knows which."""
    orientation = exif_orientation(image_path)
    for mask_path in mask_paths:
        other = exif_orientation(mask_path)
        if other != orientation:
            raise BadCaseError(mask_path, f"EXIF orientation {other} ({EXIF_ORIENTATIONS[other]}) differs from "
                                          f"{orientation} ({EXIF_ORIENTATIONS[orientation]}) of its image "
                                          f"{image_path}; save both with the same orientation (or none)")
    return orientation


def open_image(path: str | Path):
    """The decoded PIL image, turned upright by its EXIF orientation; unreadable, truncated or
    non-image files raise ``BadCaseError``."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            # bilevel and palette images become plain grayscale/RGB so the readers see pixel values
            if image.mode == "1":
                return image.convert("L")
            if image.mode == "P":
                return image.convert("RGBA" if "transparency" in image.info else "RGB")
            return image.copy()
    except FileNotFoundError:
        raise BadCaseError(path, "file not found") from None
    except Exception as error:  # PIL raises many types for broken files: UnidentifiedImageError, OSError, ...
        raise BadCaseError(path, f"cannot be read as an image ({type(error).__name__}: {error})") from None


def _colour_channels(array: np.ndarray) -> np.ndarray:
    """The colour channels (alpha dropped) of an H x W x C array."""
    return array[..., :3] if array.shape[-1] >= 3 else array[..., :1]


def read_rgb(path: str | Path) -> np.ndarray:
    """H x W x 3 uint8; grayscale images are repeated into three channels."""
    image = open_image(path)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise BadCaseError(path, f"unsupported image mode {image.mode} (expected 8-bit grayscale or RGB)")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_grayscale(path: str | Path) -> tuple[np.ndarray, bool]:
    """(H x W uint8, was_colour). Grayscale stored as RGB(A) with equal channels is detected and
    kept exactly; a true colour image is converted with PIL's luminance weights."""
    image = open_image(path)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise BadCaseError(path, f"unsupported image mode {image.mode} (expected 8-bit grayscale or RGB)")
    array = np.asarray(image)
    if array.ndim == 2:
        return array.astype(np.uint8), False
    colours = _colour_channels(array).astype(np.int16)
    if colours.shape[-1] == 1 or np.abs(colours - colours[..., :1]).max() <= GRAYSCALE_CHANNEL_TOLERANCE:
        return colours[..., 0].astype(np.uint8), False
    return np.asarray(image.convert("L"), dtype=np.uint8), True


def _single_channel_mask(array: np.ndarray, path: str | Path) -> np.ndarray:
    if array.ndim == 3:
        colours = _colour_channels(array)
        if np.any(colours != colours[..., :1]):
            raise BadCaseError(path, "mask has differing colour channels (expected a grayscale mask)")
        array = colours[..., 0]
    return array


def _describe_values(array: np.ndarray) -> str:
    pixels = array.reshape(-1, array.shape[-1]) if array.ndim == 3 else array.reshape(-1)
    values, counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.argsort(-counts)[:6]
    shown = [f"{v.tolist() if np.ndim(v) else int(v)} x{int(c)}" for v, c in zip(values[order], counts[order])]
    return ", ".join(shown) + (f" and {len(values) - len(order)} more" if len(values) > len(order) else "")


def check_mask_kept(source: np.ndarray, label: np.ndarray, path: str | Path) -> None:
    """The rule every 2D converter's masks obey: when the source mask clearly shows an object
    (any colour channel well above its background), the converted 0/1 label keeps most of it.
    A colour mask, 0/1 or low-intensity values, or JPEG noise would otherwise become an empty
    label without a word."""
    brightest = _colour_channels(source).max(axis=-1) if source.ndim == 3 else source
    values, counts = np.unique(brightest, return_counts=True)
    frequent = values[(counts >= MIN_OBJECT_PIXELS) & (values > 0)]
    if not frequent.size:
        return  # an empty mask (up to stray noise pixels)
    # halfway between the background and the brightest value the mask holds in earnest
    shown = int(np.count_nonzero(brightest >= max(1, int(frequent.max()) // 2 + 1)))
    kept = int(np.count_nonzero(label))
    if shown >= MIN_OBJECT_PIXELS and kept < MIN_KEPT_FRACTION * shown:
        raise BadCaseError(path, f"the mask shows an object of {shown} pixels but the converted label keeps {kept}; "
                                 f"values found (value x pixels): {_describe_values(source)}; expected a grayscale "
                                 f"mask marking the object with {MASK_FOREGROUND_VALUE} on 0")


def read_binary_png_mask(path: str | Path) -> np.ndarray:
    """H x W uint8 0/1 from a lossless mask holding exactly 0 and 255."""
    source = np.asarray(open_image(path))
    array = _single_channel_mask(source, path)
    values = np.unique(array)
    unexpected = [int(v) for v in values if v not in (0, MASK_FOREGROUND_VALUE)]
    if unexpected == [1]:
        raise BadCaseError(path, f"mask holds 0 and 1, but this dataset's masks mark the object with "
                                 f"{MASK_FOREGROUND_VALUE} (0/{MASK_FOREGROUND_VALUE}); is it already converted, "
                                 "or from another dataset?")
    if unexpected:
        raise BadCaseError(path, f"unexpected mask values {unexpected[:8]} (expected only 0 and "
                                 f"{MASK_FOREGROUND_VALUE}); found {[int(v) for v in values[:8]]}")
    label = (array == MASK_FOREGROUND_VALUE).astype(np.uint8)
    check_mask_kept(source, label, path)
    return label


def read_binary_jpeg_mask(path: str | Path) -> np.ndarray:
    """H x W uint8 0/1 from a lossy (JPEG) mask: thresholded, after checking that it is binary up
    to compression noise."""
    image = open_image(path)
    array = np.asarray(image.convert("L"))
    check_mask_kept(np.asarray(image), (array >= JPEG_MASK_THRESHOLD).astype(np.uint8), path)
    low, high = JPEG_MASK_AMBIGUOUS_RANGE
    ambiguous = float(np.mean((array > low) & (array < high)))
    if ambiguous > JPEG_MASK_MAX_AMBIGUOUS_FRACTION:
        raise BadCaseError(path, f"does not look like a binary mask: {ambiguous:.0%} of pixels lie between "
                                 f"{low} and {high} (at most {JPEG_MASK_MAX_AMBIGUOUS_FRACTION:.0%} expected)")
    return (array >= JPEG_MASK_THRESHOLD).astype(np.uint8)


def check_same_size(image: np.ndarray, image_path: str | Path, mask: np.ndarray, mask_path: str | Path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise BadCaseError(mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                                      f"{image.shape[1]}x{image.shape[0]} of {image_path}")


def write_png(array: np.ndarray, path: str | Path) -> None:
    """Writes an H x W (grayscale, mask) or H x W x 3 (RGB) uint8 array as PNG."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, compress_level=PNG_COMPRESS_LEVEL)


def pixel_hash(array: np.ndarray) -> str:
    """Hash of the decoded pixels (and shape): equal for the same picture however it was encoded."""
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
