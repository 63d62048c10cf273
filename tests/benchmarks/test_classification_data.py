"""The data side of benchmarks/bench_classification.py: image folders, the split, Poisson noise."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from classification_data import load_image_folder, poisson_noise, stratified_split  # noqa: E402


def write_images(folder: Path, n: int, value: int, size: int = 6) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(folder / f"{i}.png")


def test_stratified_split_is_fixed_and_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(60))
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]
    again = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(again[1], test)


def test_image_folder_with_and_without_a_given_split(tmp_path):
    write_images(tmp_path / "flat" / "cat", 5, 255)
    write_images(tmp_path / "flat" / "dog", 5, 0)
    data = load_image_folder(tmp_path / "flat", image_size=4, in_channels=1, test_fraction=0.2)
    assert data.class_names == ["cat", "dog"] and data.in_channels == 1
    assert data.train_images.shape == (8, 1, 4, 4) and data.test_images.shape == (2, 1, 4, 4)
    # grey values in [0, 1], each image labelled by its folder
    assert torch.equal(data.train_images.amax(dim=(1, 2, 3)), (data.train_labels == 0).float())

    for part, n in (("train", 3), ("test", 2)):
        write_images(tmp_path / "split" / part / "a", n, 10)
        write_images(tmp_path / "split" / part / "b", n, 20)
    data = load_image_folder(tmp_path / "split", image_size=6, in_channels=3)
    assert data.train_images.shape == (6, 3, 6, 6) and data.test_images.shape == (4, 3, 6, 6)


def test_image_folder_errors_name_the_file_or_folder(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path, image_size=4)
    write_images(tmp_path / "a", 3, 1)
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png: not a readable image"):
        load_image_folder(tmp_path, image_size=4)
    (tmp_path / "a" / "broken.png").unlink()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"b: no image files"):
        load_image_folder(tmp_path, image_size=4)


def test_poisson_noise_is_signal_dependent_and_reproducible():
    images = torch.cat([torch.zeros(1, 1, 64, 64), torch.full((1, 1, 64, 64), 0.5)])
    noisy = poisson_noise(images, peak=16.0, seed=0)
    assert (noisy[0] == 0).all()  # no signal, no shot noise
    # mean kept, variance x / peak = 0.5 / 16
    assert abs(noisy[1].mean().item() - 0.5) < 0.02
    assert abs(noisy[1].var().item() - 0.5 / 16) < 0.005
    assert torch.equal(noisy, poisson_noise(images, peak=16.0, seed=0))
    with pytest.raises(ValueError, match="peak"):
        poisson_noise(images, peak=0.0, seed=0)
