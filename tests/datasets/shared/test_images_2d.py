"""Reading 2D images and masks: encodings that mean the same pixels, and those that are errors."""

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.errors import BadCaseError
from pu_nnunet.datasets.shared.images_2d import (pixel_hash, read_binary_jpeg_mask, read_binary_png_mask, read_grayscale,
                                          read_rgb)


def test_grayscale_detection(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(tmp_path / "rgb_gray.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    colour = np.stack([gray, gray // 2, gray], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    assert np.array_equal(read_grayscale(tmp_path / "rgb_gray.png")[0], gray)
    assert read_grayscale(tmp_path / "rgb_gray.png")[1] is False
    assert read_grayscale(tmp_path / "gray.png")[1] is False
    assert read_grayscale(tmp_path / "colour.png")[1] is True
    assert read_rgb(tmp_path / "gray.png").shape == (6, 8, 3)
    assert pixel_hash(read_grayscale(tmp_path / "rgb_gray.png")[0]) == pixel_hash(gray)


def test_png_masks(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:5] = 255
    Image.fromarray(mask).convert("1").save(tmp_path / "bilevel.png")
    Image.fromarray(mask).convert("P").save(tmp_path / "palette.png")
    for name in ("bilevel.png", "palette.png"):
        assert np.array_equal(read_binary_png_mask(tmp_path / name), mask // 255)
    coloured = np.zeros((6, 8, 3), np.uint8)
    coloured[1, 1] = (255, 0, 0)
    Image.fromarray(coloured).save(tmp_path / "red.png")
    with pytest.raises(BadCaseError, match="red.png: mask has differing colour channels"):
        read_binary_png_mask(tmp_path / "red.png")
    with pytest.raises(BadCaseError, match="missing.png: file not found"):
        read_binary_png_mask(tmp_path / "missing.png")


def test_jpeg_mask_threshold(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "mask.jpg", quality=60)
    decoded = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert len(np.unique(decoded)) > 2  # lossy: not exactly binary
    assert np.array_equal(read_binary_jpeg_mask(tmp_path / "mask.jpg"), mask // 255)
