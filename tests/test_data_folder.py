"""Image folders: class folders, train/test subfolders, resizing, channels, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advlab.data import load_data
from advlab.errors import DataError
from tests.conftest import compose_config


def write_images(folder: Path, n: int, colour: tuple[int, int, int], ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40 + i, 30), colour).save(folder / f"img_{i}.{ext}")


def _cfg(root: Path, *extra: str):
    return compose_config(["data=folder", f"data.root={root}", "data.val_fraction=0", *extra]).data


def _load(root: Path, *extra: str):
    return load_data(_cfg(root, *extra), seed=0, cache_dir=root)


def test_class_folders_resized_rgb_with_a_fixed_split(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", 10, (200, 10, 10))
    write_images(tmp_path / "dogs", 10, (10, 10, 200), ext="jpg")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image, ignored")
    splits = _load(tmp_path, "data.image_size=16", "data.test_fraction=0.2")
    assert splits.class_names == ["cats", "dogs"]
    assert (len(splits.train), len(splits.test)) == (16, 4)
    assert np.bincount(splits.test.labels).tolist() == [2, 2]
    assert splits.train.images.shape[1:] == (3, 16, 16)
    cat = splits.train.images[splits.train.labels == 0][0]
    assert cat[0].mean() > 190 and cat[2].mean() < 20  # channel-first RGB
    dog = splits.train.images[splits.train.labels == 1][0]
    assert dog[2].mean() > 180  # JPEG: approximately blue
    again = load_data(_cfg(tmp_path, "data.image_size=16"), seed=7, cache_dir=tmp_path)
    assert np.array_equal(again.test.images, splits.test.images)  # test split is fixed


def test_greyscale_and_train_test_subfolders(tmp_path: Path) -> None:
    for split, n in (("train", 6), ("test", 3)):
        write_images(tmp_path / split / "a", n, (255, 255, 255))
        write_images(tmp_path / split / "b", n, (0, 0, 0))
    splits = _load(tmp_path, "data.channels=1", "data.image_size=8")
    assert (len(splits.train), len(splits.test)) == (12, 6)
    assert splits.channels == 1 and splits.image_size == (8, 8)
    assert splits.test.images[splits.test.labels == 0].min() == 255
    assert splits.test.images[splits.test.labels == 1].max() == 0


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 3, (1, 2, 3))
    write_images(tmp_path / "b", 3, (1, 2, 3))
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as info:
        _load(tmp_path)
    message = str(info.value)
    assert "1 unreadable image files" in message and str(tmp_path / "b" / "broken.png") in message
    assert "\n" not in message


def test_empty_class_single_class_and_half_split_are_errors(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 3, (1, 2, 3))
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg images in class folder"):
        _load(tmp_path)
    (tmp_path / "b").rmdir()
    with pytest.raises(DataError, match="need at least 2 class folders with images, found 1"):
        _load(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="has train/ but no test/"):
        _load(tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        _load(tmp_path / "missing")


def test_test_classes_must_exist_in_train(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "a", 2, (1, 2, 3))
    write_images(tmp_path / "train" / "b", 2, (1, 2, 3))
    write_images(tmp_path / "test" / "a", 1, (1, 2, 3))
    write_images(tmp_path / "test" / "zebra", 1, (1, 2, 3))
    with pytest.raises(DataError, match="classes not in train/: zebra"):
        _load(tmp_path)
