"""The course's binary gender format (``data=gender``).

A folder (the course's ``DataBases/``) holds, per tag (``1k``, ``10k``, ``100k``, ``test10k``, ...):

- ``data_<tag>.bin``: N x 2304 bytes, N images of 48 x 48 greyscale uint8, row-major, no header;
- ``gender_<tag>.bin``: N x 2 float32 (little-endian), one one-hot label row per image.

N comes from the file sizes. The files are read whole with ``np.fromfile`` (100k images: about
230 MB, a fraction of a second), never image by image and never as float.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from advlab.data.base import ImageSet, RawData, check_class_names, data_root
from advlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SIDE = 48
IMAGE_BYTES = SIDE * SIDE  # 2304: one 48x48 uint8 image
NUM_COLUMNS = 2
LABEL_BYTES = NUM_COLUMNS * 4  # 8: one row of two float32

_TAG_RE = re.compile(r"^(?:data|gender)_(.+)\.bin$")


def available_tags(root: Path) -> list[str]:
    """Tags with both ``data_<tag>.bin`` and ``gender_<tag>.bin`` in ``root`` (sorted)."""
    if not root.is_dir():
        return []
    data = {m.group(1) for p in root.glob("data_*.bin") if (m := _TAG_RE.match(p.name))}
    labels = {m.group(1) for p in root.glob("gender_*.bin") if (m := _TAG_RE.match(p.name))}
    return sorted(data & labels)


def read_pair(root: Path, tag: str) -> ImageSet:
    """Read ``data_<tag>.bin`` and ``gender_<tag>.bin`` from ``root``.

    Returns images uint8 (N, 1, 48, 48) and labels int64 (N,) (the index of the one-hot column).
    Every problem is a one-line DataError naming the file.
    """
    image_path = root / f"data_{tag}.bin"
    label_path = root / f"gender_{tag}.bin"
    for path in (image_path, label_path):
        if not path.is_file():
            tags = available_tags(root)
            present = ", ".join(tags) if tags else "none"
            raise DataError(f"{path}: file not found; tags present in {root}: {present}")

    image_size = image_path.stat().st_size
    label_size = label_path.stat().st_size
    if image_size == 0 or image_size % IMAGE_BYTES:
        raise DataError(
            f"{image_path}: size {image_size} bytes is not a positive multiple of {IMAGE_BYTES} "
            f"(48x48 uint8 images)"
        )
    if label_size == 0 or label_size % LABEL_BYTES:
        raise DataError(
            f"{label_path}: size {label_size} bytes is not a positive multiple of {LABEL_BYTES} "
            f"(rows of 2 float32)"
        )
    n_images, n_labels = image_size // IMAGE_BYTES, label_size // LABEL_BYTES
    if n_images != n_labels:
        raise DataError(
            f"{label_path}: {n_labels} label rows but {image_path.name} holds {n_images} images"
        )

    labels_raw = np.fromfile(label_path, dtype="<f4").reshape(n_labels, NUM_COLUMNS)
    nan_rows = np.flatnonzero(np.isnan(labels_raw).any(axis=1))
    if len(nan_rows):
        raise DataError(
            f"{label_path}: {len(nan_rows)} label rows contain NaN (first: row {nan_rows[0]})"
        )
    one_hot = ((labels_raw == 0) | (labels_raw == 1)).all(axis=1) & (labels_raw.sum(axis=1) == 1)
    bad = np.flatnonzero(~one_hot)
    if len(bad):
        row = labels_raw[bad[0]].tolist()
        raise DataError(
            f"{label_path}: {len(bad)} label rows are not one-hot (first: row {bad[0]} = {row})"
        )
    labels = labels_raw.argmax(axis=1).astype(np.int64)

    # one read of the whole file; a reshape is a view, so no copy is made
    images = np.fromfile(image_path, dtype=np.uint8).reshape(n_images, 1, SIDE, SIDE)
    return ImageSet(images, labels)


def load(cfg_data: DictConfig, *, seed: int, cache_dir: Path) -> RawData:
    """Training and test sets of the tags ``data.train`` / ``data.test`` under ``data.root``.

    ``seed`` and ``cache_dir`` are unused: the course's files fix the train/test split and live
    wherever the user keeps them.
    """
    del seed, cache_dir
    root = data_root(cfg_data)
    if not root.is_dir():
        raise DataError(f"data.root={root}: folder not found (expected data_<tag>.bin files)")
    class_names = list(cfg_data.get("class_names") or [])
    if len(class_names) != NUM_COLUMNS:
        raise ConfigError(
            f"data.class_names={class_names}: the gender labels have {NUM_COLUMNS} columns, "
            f"so give exactly {NUM_COLUMNS} names (in column order)"
        )
    class_names = check_class_names(class_names, "data.class_names")
    train = read_pair(root, str(cfg_data.train))
    test = read_pair(root, str(cfg_data.test))
    log.info(
        "gender: %d training images (%s), %d test images (%s) from %s",
        len(train),
        cfg_data.train,
        len(test),
        cfg_data.test,
        root,
    )
    return RawData(train, test, class_names)
