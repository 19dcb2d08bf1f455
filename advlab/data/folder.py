"""A user's own images (``data=folder``).

Layout: ``data.root/<class_name>/*.{png,jpg,jpeg}``, or the same under ``data.root/train/`` and
``data.root/test/``. Without ``train/`` + ``test/`` the test set is a stratified split of
``data.test_fraction`` of each class, fixed by :data:`SPLIT_SEED` (the same test images for every
``cfg.seed``). Images are converted to greyscale (``data.channels=1``) or RGB (``3``) and resized to
``data.image_size`` x ``data.image_size`` (bilinear, aspect ratio not kept).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from advlab.data.base import ImageSet, RawData, data_root, split_rng, stratified_holdout
from advlab.errors import DataError

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_SEED = 0  # fixed: the test set must not change with cfg.seed
_MAX_LISTED = 5  # unreadable files named in the error message before "and N more"


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS
    )


def _scan(folder: Path, *, require_all: bool) -> dict[str, list[Path]]:
    """Class name -> image files under ``folder``; empty classes and < 2 classes are errors."""
    classes = {d.name: _image_files(d) for d in _class_dirs(folder)}
    empty = [name for name, files in classes.items() if not files]
    if empty and require_all:
        raise DataError(
            f"{folder / empty[0]}: no .png/.jpg/.jpeg images in class folder"
            + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else "")
        )
    classes = {name: files for name, files in classes.items() if files}
    if require_all and len(classes) < 2:
        found = ", ".join(classes) if classes else "none"
        raise DataError(
            f"{folder}: need at least 2 class folders with images, found {len(classes)} ({found})"
        )
    return classes


def _read_images(
    files: list[Path], size: int, channels: int
) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """uint8 (N, C, size, size) of the readable files, plus (file, reason) for the others."""
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), channels, size, size), dtype=np.uint8)
    bad: list[tuple[Path, str]] = []
    n = 0
    for path in files:
        try:
            with Image.open(path) as img:
                img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            bad.append((path, type(err).__name__))
            continue
        out[n] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        n += 1
    return out[:n], bad


def _read_split(
    classes: dict[str, list[Path]], class_names: list[str], size: int, channels: int
) -> tuple[ImageSet, list[tuple[Path, str]]]:
    images, labels, bad = [], [], []
    for index, name in enumerate(class_names):
        arr, unreadable = _read_images(classes.get(name, []), size, channels)
        images.append(arr)
        labels.append(np.full(len(arr), index, dtype=np.int64))
        bad.extend(unreadable)
    return ImageSet(np.concatenate(images), np.concatenate(labels)), bad


def _raise_unreadable(bad: list[tuple[Path, str]]) -> None:
    listed = ", ".join(f"{p} ({why})" for p, why in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    raise DataError(f"{len(bad)} unreadable image files: {listed}{more}")


def load(cfg_data: DictConfig, *, seed: int, cache_dir: Path) -> RawData:
    """Images and labels from class folders under ``data.root`` (class index = sorted name order).

    ``seed`` and ``cache_dir`` are unused (the train/test split is fixed, nothing is cached).
    """
    del seed, cache_dir
    root = data_root(cfg_data)
    size, channels = int(cfg_data.image_size), int(cfg_data.channels)  # checked by validate
    if not root.is_dir():
        raise DataError(f"data.root={root}: folder not found")

    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        present, absent = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
        raise DataError(f"{root}: has {present.name}/ but no {absent.name}/ (give both or neither)")

    if train_dir.is_dir():
        train_classes = _scan(train_dir, require_all=True)
        test_classes = _scan(test_dir, require_all=False)
        class_names = sorted(train_classes)
        unknown = sorted(set(test_classes) - set(class_names))
        if unknown:
            raise DataError(f"{test_dir}: classes not in {train_dir.name}/: {', '.join(unknown)}")
        if not test_classes:
            raise DataError(f"{test_dir}: no class folders with images")
        train, bad = _read_split(train_classes, class_names, size, channels)
        test, bad_test = _read_split(test_classes, class_names, size, channels)
        bad += bad_test
    else:
        test_fraction = float(cfg_data.test_fraction)
        classes = _scan(root, require_all=True)
        class_names = sorted(classes)
        full, bad = _read_split(classes, class_names, size, channels)
        test_idx = stratified_holdout(full.labels, test_fraction, split_rng(SPLIT_SEED, 0))
        is_test = np.zeros(len(full), dtype=bool)
        is_test[test_idx] = True
        train, test = full.subset(~is_test), full.subset(is_test)
    if bad:
        _raise_unreadable(bad)
    if len(test) == 0 or len(train) == 0:
        raise DataError(
            f"{root}: {len(train)} training and {len(test)} test images; add images or "
            f"change data.test_fraction"
        )
    log.info(
        "folder %s: %d train, %d test images, classes %s", root, len(train), len(test), class_names
    )
    return RawData(train, test, class_names)
